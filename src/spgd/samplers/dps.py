"""DPS: Diffusion Posterior Sampling (Chung et al., ICLR 2023).

Ancestral DDPM sampling over the prior's discrete ladder (VP variables, x_T ~ N(0, I)). At each step
x0hat = D(x_t) is (optionally) clipped to [-1, 1], the exact DDPM posterior q(x_s | x_t, x0hat)
is sampled (variance beta~_t: the released code uses the network's learned variance, which a
denoiser D(x, sigma) does not expose), and then

    x_s <- x_s - zeta * grad_{x_t} ||y - A(x0hat(x_t))||      (the un-squared residual norm)

Published zeta: 0.3 for super-resolution and (non-linear) deblurring, 0.5 for inpainting, 1.0 for
phase retrieval. The norm is taken per image: the released code takes one norm over the whole
batch, so its results change with the batch size; here a batch of three equals three runs of one.
`steps` < 1000 respaces the chain (evenly spread timesteps, exact posterior of the respaced chain).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..protocols import Denoiser, Operator
from ..seeding import StepNoise
from .common import Loop, Trace, start_noise
from .ddpm import chain_alpha_bars


def dps(prior: Denoiser, operator: Operator, y: Tensor, x_start: Tensor | None = None, seed: int | Sequence[int] = 0, *,
        steps: int = 1000, zeta: float = 0.3, clip_denoised: bool = True, shape: Sequence[int] | None = None,
        on_nan: str = "raise", check_every: int = 1, trace: Trace | None = None, progress: bool = True) -> Tensor:
    """Restore x from y = A(x) + noise with DPS; `x_start` is x_T in VP units (standard normal)."""
    shape = tuple(shape) if shape is not None else operator.input_shape(y)
    x = start_noise(shape, 1.0, seed, y.device, x_start)
    noise = StepNoise(seed, shape[0], "dps", y.device)
    abar = chain_alpha_bars(prior, steps, "respaced")
    loop = Loop("DPS", len(abar), y, operator.noise_sigma, on_nan, check_every, f"try a smaller zeta (now {zeta})",
                trace, progress)
    for i in loop:
        ab_t = abar[i]
        ab_s = abar[i + 1] if i + 1 < len(abar) else 1.0
        sigma_t = math.sqrt((1 - ab_t) / ab_t)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0hat = prior.denoise(x_in / math.sqrt(ab_t), sigma_t)
            if clip_denoised:
                x0hat = x0hat.clamp(-1, 1)
            norm = (operator.A(x0hat) - y).flatten(1).norm(dim=1)
            grad, = torch.autograd.grad(norm.sum(), x_in)
        x0hat = x0hat.detach()
        beta = 1 - ab_t / ab_s
        mean = (math.sqrt(ab_s) * beta * x0hat + math.sqrt(1 - beta) * (1 - ab_s) * x) / (1 - ab_t)
        if i + 1 < len(abar):
            mean = mean + math.sqrt(beta * (1 - ab_s) / (1 - ab_t)) * noise(shape[1:])
        x = loop.end_step(i, mean - zeta * grad, norm.detach() ** 2, sigma_t, x0hat, shown=norm)
    return x.detach()
