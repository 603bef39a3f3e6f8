"""Noise schedules in one leaf module: discrete DDPM ladders, the sigma <-> time maps, sampler grids.

Everything is in EDM's variables: a noisy image is x = x0 + sigma n. A discrete DDPM ladder of M
steps with cumulative products alpha_bar_k is the ladder of noise levels
sigma_k = sqrt((1 - alpha_bar_k) / alpha_bar_k) (ascending), and a VP state x_vp = sqrt(alpha_bar) x.
Priors state their ladder (`prior.ladder`); DDPM-chain samplers walk it (`respaced_indices`,
`strided_indices`); continuous samplers draw their own levels (`sigma_schedule`). Priors and samplers
both import from here, never from each other.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

NUM_TIMESTEPS = 1000  # the length of the public checkpoints' training ladders
# continuous-time linear VP schedule (Song et al. 2021), the limit of the 1e-4 .. 0.02 linear betas
BETA_MIN = 0.1
BETA_D = 19.9


def linear_alpha_bars(steps: int = NUM_TIMESTEPS, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """alpha_bar_k of the linear beta schedule (DDPM, guided-diffusion "linear"), float64, k = 0..steps-1."""
    betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


def cosine_alpha_bars(steps: int = NUM_TIMESTEPS, offset: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """alpha_bar_k of the cosine schedule (improved DDPM; diffusers "squaredcos_cap_v2"), float64.

    betas_k = min(1 - f((k+1)/M) / f(k/M), max_beta) with f(t) = cos((t + offset) / (1 + offset) * pi/2)^2.
    """
    def f(t: float) -> float:
        return math.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2

    betas = torch.tensor([min(1 - f((k + 1) / steps) / f(k / steps), max_beta) for k in range(steps)],
                         dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


def sigmas_from_alpha_bars(alpha_bars: Tensor) -> Tensor:
    """sigma = sqrt((1 - alpha_bar) / alpha_bar): a DDPM ladder as EDM noise levels."""
    return ((1 - alpha_bars) / alpha_bars).sqrt()


def linear_ladder(steps: int = NUM_TIMESTEPS) -> Tensor:
    """The noise levels (ascending, float64) of the linear 1e-4 .. 0.02 ladder: ~0.01 .. ~157 for 1000 steps."""
    return ((1 - linear_alpha_bars(steps)) / linear_alpha_bars(steps)).sqrt()


def vp_sigma_to_t(sigma: Tensor) -> Tensor:
    """Continuous linear-VP time in [0, 1] at which the noise level (in x / alpha units) is sigma."""
    return ((BETA_MIN ** 2 + 2 * BETA_D * torch.log1p(sigma ** 2)).sqrt() - BETA_MIN) / BETA_D


def ladder_position(sigma: Tensor, ladder: Tensor) -> Tensor:
    """The fractional index of sigma in an ascending ladder: linear in log sigma between two steps,
    clamped to [0, M - 1] outside it (the continuous inverse of a discrete schedule)."""
    log_ladder = ladder.to(device=sigma.device, dtype=torch.float64).log()
    s = sigma.double().clamp_min(1e-30).log()
    upper = torch.searchsorted(log_ladder, s).clamp(1, len(ladder) - 1)
    lo, hi = log_ladder[upper - 1], log_ladder[upper]
    frac = ((s - lo) / (hi - lo)).clamp(0, 1)
    return (upper - 1 + frac).to(sigma.dtype)


def respaced_indices(length: int, steps: int) -> list[int]:
    """`steps` indices spread evenly over 0..length-1, both ends included (guided-diffusion's respacing)."""
    _check_steps(length, steps)
    if steps == 1:
        return [length - 1]
    stride = (length - 1) / (steps - 1)
    return [round(i * stride) for i in range(steps)]


def strided_indices(length: int, steps: int) -> list[int]:
    """range(0, length, length // steps) (the DDIM-style "uniform" skip); `steps` must divide `length`.

    Other counts would stop the chain short of the top (600 of 1000 would end at index 599), so the
    starting noise x_T ~ N(0, I) would not match the first level.
    """
    _check_steps(length, steps)
    if length % steps:
        divisors = [d for d in range(1, length + 1) if length % d == 0 and d >= 10][:10]
        raise ValueError(f"steps must divide the prior's {length}-level ladder for this chain "
                         f"(e.g. {divisors}), got {steps}")
    return list(range(0, length, length // steps))


def quadratic_indices(length: int, steps: int) -> list[int]:
    """DiffPIR's "quad" spacing, ascending: (M - 1) - min(floor(sqrt(j / (N - 1)) M), M - 1) for j < N,
    dense at low noise (for M = 1000, N = 100: 0, 5, 10, ..., 857, 899, 999)."""
    _check_steps(length, steps)
    if steps == 1:
        return [length - 1]
    offsets = [int(math.sqrt(j * (length ** 2 / (steps - 1)))) for j in range(steps - 1)] + [length - 1]
    indices = sorted(length - 1 - min(o, length - 1) for o in offsets)
    if len(set(indices)) != steps:
        raise ValueError(f"steps={steps} is too many for the quadratic spacing of a {length}-level ladder "
                         "(two steps would share a level)")
    return indices


def _check_steps(length: int, steps: int) -> None:
    if not 1 <= steps <= length:
        raise ValueError(f"steps must be in 1..{length} (the prior's discrete ladder), got {steps}")


def sigma_schedule(steps: int, sigma_max: float, sigma_min: float, kind: str = "poly-7") -> Tensor:
    """`steps` noise levels from sigma_max down to sigma_min, then a final 0 (float64, length steps + 1).

    "poly-7" (EDM, rho = 7): sigma_i = (sigma_max^(1/7) + i/(N-1) (sigma_min^(1/7) - sigma_max^(1/7)))^7;
    "log": log-uniform spacing.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    r = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    if kind.startswith("poly-"):
        rho = float(kind.split("-", 1)[1])
        lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
        sigmas = (hi + r * (lo - hi)) ** rho
    elif kind == "log":
        sigmas = torch.exp(math.log(sigma_max) + r * (math.log(sigma_min) - math.log(sigma_max)))
    else:
        raise ValueError(f"unknown schedule {kind!r}: use 'poly-7' (or another 'poly-<rho>') or 'log'")
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


def clamp_range(sigma_max: float, sigma_min: float, prior_range: Sequence[float]) -> tuple[float, float]:
    """A sampler's (sigma_max, sigma_min) clamped into the prior's [sigma_min, sigma_max]."""
    low, high = float(prior_range[0]), float(prior_range[1])
    top = min(float(sigma_max), high)
    return top, min(max(float(sigma_min), low), top)


def step_sizes(sigmas: Tensor) -> Tensor:
    """f_i = 2 sigma_i (sigma_i - sigma_{i+1}), clipped below at 0 (the probability-flow Euler step)."""
    return (2 * sigmas[:-1] * (sigmas[:-1] - sigmas[1:])).clamp_min(0)


def lr_schedule(lr: float, steps: int, lr_min_ratio: float = 0.01) -> list[float]:
    """Linear decay lr_i = lr (1 + (i/N)(lr_min_ratio - 1)), i = 0..N-1."""
    return [lr * (1 + (i / steps) * (lr_min_ratio - 1)) for i in range(steps)]
