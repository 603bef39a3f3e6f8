"""What the DDPM-chain samplers (DPS, RED-diff, DeqIR) share: walking the prior's own discrete ladder.

A chain of `steps` levels is picked from the prior's ladder (`prior.ladder`, ascending noise levels
sigma_k; alpha_bar_k = 1 / (1 + sigma_k^2)), top first. A VP state at level k is
x_vp = sqrt(alpha_bar_k) x with x = x0 + sigma_k * noise, so `prior.denoise(x_vp / sqrt(alpha_bar_k),
sigma_k)` is the DDPM x0-prediction: any prior with a ladder (linear, cosine, a diffusers scheduler,
a continuous prior's standard ladder) runs these samplers unchanged.
"""
from __future__ import annotations

from torch import Tensor

from ..protocols import Denoiser
from ..schedule import respaced_indices, strided_indices

SPACINGS = {"respaced": respaced_indices, "strided": strided_indices}


def chain_alpha_bars(prior: Denoiser, steps: int, spacing: str) -> list[float]:
    """alpha_bar of the `steps` chain levels taken from the prior's ladder, highest noise first.

    spacing "respaced": evenly spread indices, both ends included (guided-diffusion's respacing);
    "strided": range(0, M, M // steps), `steps` dividing the ladder's length M (DDIM's skip).
    """
    ladder: Tensor = prior.ladder.double()
    alpha_bars = 1 / (1 + ladder ** 2)
    indices = SPACINGS[spacing](len(ladder), steps)[::-1]
    return [float(alpha_bars[k]) for k in indices]
