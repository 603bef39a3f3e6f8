"""DAPS: Decoupled Annealing Posterior Sampling (Zhang et al., CVPR 2025).

At each annealing level sigma_i (poly-7 from sigma_max 100 towards sigma_min 0.1):
1. x0hat = a probability-flow ODE solve from x_i at sigma_i down to `ode_sigma_min` (0.01),
   `ode_steps` Euler steps on a poly-7 grid, without autograd;
2. Langevin dynamics in x0 space, `langevin_steps` steps of
   x <- x + lr_i * grad log p + sqrt(2 lr_i) * noise, started at x0hat, with
   log p(x0) = -||A(x0) - y||^2 / (2 tau^2) - ||x0 - x0hat||^2 / (2 sigma_i^2);
3. re-noise: x_{i+1} = x0 + sigma_{i+1} * noise (sigma after the last level is 0).

As in the released code, the step size is constant within a level and decays linearly across
levels, lr_i = lr (1 + i/(N+1) (lr_min_ratio - 1)), and the N levels are the first N of an N+1-point
poly-7 grid (its scheduler counts an extra initial step). The released code's data term is
||A(x0) - y||^2 / tau'^2 with tau' = 0.01, i.e. tau = tau' / sqrt(2) in the form above: that is the
default, so the published learning rates apply unchanged. DAPS-1K: 200 levels x 5 ODE steps (the
presets); DAPS-100: 50 levels x 2 ODE steps (`DAPS_100`).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..protocols import Denoiser, Operator
from ..schedule import clamp_range, lr_schedule, sigma_schedule
from ..seeding import StepNoise
from .common import Loop, Trace, start_noise

PUBLISHED_TAU = 0.01 / math.sqrt(2)
DAPS_1K = {"steps": 200, "ode_steps": 5}
DAPS_100 = {"steps": 50, "ode_steps": 2}


def daps(prior: Denoiser, operator: Operator, y: Tensor, x_start: Tensor | None = None, seed: int | Sequence[int] = 0, *,
         steps: int = 200, ode_steps: int = 5, langevin_steps: int = 100, lr: float = 1e-4,
         lr_min_ratio: float = 0.01, tau: float = PUBLISHED_TAU, sigma_max: float = 100.0, sigma_min: float = 0.1,
         ode_sigma_min: float = 0.01, schedule: str = "poly-7", shape: Sequence[int] | None = None,
         on_nan: str = "raise", check_every: int = 1, trace: Trace | None = None, progress: bool = True) -> Tensor:
    """Restore x from y = A(x) + noise with DAPS; `x_start` is the state at sigma_max (sigma_max-scaled noise).

    sigma_max and sigma_min (the annealing levels) are clamped to the prior's noise range.
    """
    if steps < 1 or ode_steps < 1 or langevin_steps < 0:
        raise ValueError(f"need steps >= 1, ode_steps >= 1 and langevin_steps >= 0, "
                         f"got {steps}, {ode_steps} and {langevin_steps}")
    if not 0 < ode_sigma_min <= sigma_min:
        raise ValueError(f"need 0 < ode_sigma_min <= sigma_min, got {ode_sigma_min} and {sigma_min}")
    shape = tuple(shape) if shape is not None else operator.input_shape(y)
    sigma_max, sigma_min = clamp_range(sigma_max, sigma_min, (prior.sigma_min, prior.sigma_max))
    levels = sigma_schedule(steps + 1, sigma_max, sigma_min, schedule)[:steps].tolist() + [0.0]
    lrs = lr_schedule(lr, steps + 1, lr_min_ratio)[:steps]
    x = start_noise(shape, sigma_max, seed, y.device, x_start)
    langevin_noise = StepNoise(seed, shape[0], "daps-langevin", y.device)
    renoise = StepNoise(seed, shape[0], "daps-renoise", y.device)
    loop = Loop("DAPS", steps, y, operator.noise_sigma, on_nan, check_every, f"try a smaller lr (now {lr})", trace,
                progress)
    for i in loop:
        with torch.no_grad():
            x0hat = probability_flow(prior, x, levels[i], ode_sigma_min, ode_steps, schedule)
        x0, loss = _langevin(operator, y, x0hat, levels[i], lrs[i], tau, langevin_steps, langevin_noise)
        x = x0 + levels[i + 1] * renoise(shape[1:]) if levels[i + 1] > 0 else x0
        x = loop.end_step(i, x, loss, levels[i], x0hat, scale=1 + levels[i + 1])
    return x.detach()


def probability_flow(prior: Denoiser, x: Tensor, sigma: float, sigma_end: float, steps: int, schedule: str = "poly-7") -> Tensor:
    """Euler solve of dx/dsigma = (x - D(x, sigma)) / sigma from sigma to sigma_end over a `schedule` grid."""
    grid = sigma_schedule(steps + 1, sigma, sigma_end, schedule)[:-1].tolist()
    for s, s_next in zip(grid[:-1], grid[1:]):
        x = x + (s_next - s) * (x - prior.denoise(x, s)) / s
    return x


def _langevin(operator: Operator, y: Tensor, x0hat: Tensor, sigma: float, lr: float, tau: float, steps: int,
              noise: StepNoise) -> tuple[Tensor, Tensor]:
    """Langevin samples of p(x0 | x0hat, y) (see the module docstring) and the last data-fit loss per image."""
    x = x0hat.detach()
    if steps == 0:
        return x, (operator.A(x) - y).flatten(1).pow(2).sum(dim=1)
    for _ in range(steps):
        with torch.enable_grad():
            x_in = x.requires_grad_(True)
            loss = (operator.A(x_in) - y).flatten(1).pow(2).sum(dim=1)
            grad, = torch.autograd.grad(loss.sum(), x_in)
        score = -grad / (2 * tau ** 2) + (x0hat - x.detach()) / sigma ** 2
        x = x.detach() + lr * score + math.sqrt(2 * lr) * noise(x.shape[1:])
    return x.detach(), loss.detach()
