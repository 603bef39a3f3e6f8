"""What the DDPM-chain samplers (DPS, RED-diff, DeqIR, DiffPIR, DDNM, DDRM, PiGDM) share: walking the prior's own discrete ladder.

A chain of `steps` levels is picked from the prior's ladder (`prior.ladder`, ascending noise levels
sigma_k; alpha_bar_k = 1 / (1 + sigma_k^2)), top first. A VP state at level k is
x_vp = sqrt(alpha_bar_k) x with x = x0 + sigma_k * noise, so `prior.denoise(x_vp / sqrt(alpha_bar_k),
sigma_k)` is the DDPM x0-prediction: any prior with a ladder (linear, cosine, a diffusers scheduler,
a continuous prior's standard ladder) runs these samplers unchanged.
"""
from __future__ import annotations

import math

from torch import Tensor

from ..protocols import Denoiser
from ..schedule import quadratic_indices, respaced_indices, strided_indices

SPACINGS = {"respaced": respaced_indices, "strided": strided_indices, "quadratic": quadratic_indices}


def chain_sigmas(prior: Denoiser, steps: int, spacing: str) -> list[float]:
    """The chain's noise levels sigma_k = sqrt((1 - alpha_bar_k) / alpha_bar_k), highest first."""
    return [math.sqrt((1 - a) / a) for a in chain_alpha_bars(prior, steps, spacing)]


def chain_alpha_bars(prior: Denoiser, steps: int, spacing: str) -> list[float]:
    """alpha_bar of the `steps` chain levels taken from the prior's ladder, highest noise first.

    spacing "respaced": evenly spread indices, both ends included (guided-diffusion's respacing);
    "strided": range(0, M, M // steps), `steps` dividing the ladder's length M (DDIM's skip);
    "quadratic": DiffPIR's spacing, dense at low noise (`schedule.quadratic_indices`).
    """
    ladder: Tensor = prior.ladder.double()
    alpha_bars = 1 / (1 + ladder ** 2)
    indices = SPACINGS[spacing](len(ladder), steps)[::-1]
    return [float(alpha_bars[k]) for k in indices]
