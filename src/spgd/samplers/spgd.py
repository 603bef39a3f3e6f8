"""SPGD: Stabilized Progressive Gradient Diffusion (ACM MM 2025).

Before each probability-flow step at noise level sigma_i, a few gradient steps on the data fit
||A(D(x, sigma_i)) - y||^2 move the noisy state x ("progressive likelihood warm-up"). In the
paper's method those gradients are smoothed by adaptive directional momentum (ADM); the published
code computes the momentum but applies the raw gradient: `mode="reference"` reproduces that.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..protocols import Denoiser, Operator
from ..schedule import clamp_range, lr_schedule, sigma_schedule, step_sizes
from .common import Loop, Trace, degrees, flat_cosine, start_noise

MODES = ("paper", "reference")


def directional_agreement(g: Tensor, m: Tensor) -> Tensor:
    """a = (mean over pixels of the cosine between g and m across colour channels + 1) / 2, per image."""
    cos = torch.nn.functional.cosine_similarity(g, m, dim=1, eps=1e-12)
    return ((cos.flatten(1).mean(dim=1) + 1) / 2).reshape(-1, 1, 1, 1)


def spgd(prior: Denoiser, operator: Operator, y: Tensor, x_start: Tensor | None = None, seed: int | Sequence[int] = 0, *,
         steps: int = 200, inner_steps: int = 5, lr: float = 1.0, lr_min_ratio: float = 0.01,
         beta: float = 0.9, sigma_max: float = 100.0, sigma_min: float = 0.1, schedule: str = "poly-7",
         mode: str = "paper", shape: Sequence[int] | None = None, on_nan: str = "raise",
         check_every: int = 1, trace: Trace | None = None, progress: bool = True) -> Tensor:
    """Restore x from y = A(x) + noise with SPGD; returns the batch of restored images in [-1, 1]-ish units.

    `prior.denoise(x, sigma)` is the only use of the prior; `operator.A` the only use of the operator.
    sigma_max and sigma_min are clamped to the prior's noise range.
    Images that diverge raise `DivergenceError` (on_nan="raise") or come back as NaN ("mark").
    """
    if mode not in MODES:
        raise ValueError(f"unknown SPGD mode {mode!r}; modes: {MODES}")
    if inner_steps < 1:
        raise ValueError(f"inner_steps must be >= 1, got {inner_steps}")
    shape = tuple(shape) if shape is not None else operator.input_shape(y)
    sigma_max, sigma_min = clamp_range(sigma_max, sigma_min, (prior.sigma_min, prior.sigma_max))
    x = start_noise(shape, sigma_max, seed, y.device, x_start)
    sigmas = sigma_schedule(steps, sigma_max, sigma_min, schedule)
    f = step_sizes(sigmas)
    lrs = lr_schedule(lr, steps, lr_min_ratio)
    loop = Loop("SPGD", steps, y, operator.noise_sigma, on_nan, check_every, f"try a smaller lr (now {lr}) or more steps",
                trace, progress)
    prev_g = None
    for i in loop:
        sigma = float(sigmas[i])
        m = None
        for _ in range(inner_steps):
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(True)
                x0hat = prior.denoise(x_in, sigma)
                residual = (operator.A(x0hat) - y).flatten(1)
                loss = residual.pow(2).sum(dim=1)
                g, = torch.autograd.grad(loss.sum(), x_in)
            if mode == "paper":
                m = g if m is None else _momentum(g, m, beta)
                update = m
            else:
                update = g
            last_g, prev_g = prev_g, g
            x_before, x = x, x - lrs[i] * update
        # the probability-flow step uses the score of the last inner step, taken before its update
        score = (x0hat.detach() - x_before) / sigma ** 2
        x = x + 0.5 * float(f[i]) * score
        x = loop.check(i, x, loss, scale=1 + float(sigmas[i + 1]))
        if loop.trace is not None and loop.trace.curves:  # the angles of the paper's Figure 1, when kept
            angles = (degrees(flat_cosine(-g, score)), degrees(flat_cosine(g, last_g)) if last_g is not None else None)
        else:
            angles = ()
        loop.record(i, sigma, loss, x0hat, x, *angles)
    return x.detach()


def _momentum(g: Tensor, m: Tensor, beta: float) -> Tensor:
    ab = directional_agreement(g, m) * beta
    return ab * m + (1 - ab) * g
