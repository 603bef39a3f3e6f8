"""The shared noise schedule: EDM-style sigma levels, step sizes and learning-rate decay."""
from __future__ import annotations

import math

import torch


def sigma_schedule(steps: int, sigma_max: float, sigma_min: float, kind: str = "poly-7") -> torch.Tensor:
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


def step_sizes(sigmas: torch.Tensor) -> torch.Tensor:
    """f_i = 2 sigma_i (sigma_i - sigma_{i+1}), clipped below at 0 (the probability-flow Euler step)."""
    return (2 * sigmas[:-1] * (sigmas[:-1] - sigmas[1:])).clamp_min(0)


def lr_schedule(lr: float, steps: int, lr_min_ratio: float = 0.01) -> list[float]:
    """Linear decay lr_i = lr (1 + (i/N)(lr_min_ratio - 1)), i = 0..N-1."""
    return [lr * (1 + (i / steps) * (lr_min_ratio - 1)) for i in range(steps)]
