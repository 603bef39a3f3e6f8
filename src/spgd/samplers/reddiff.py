"""RED-diff: variational posterior sampling with a denoising-diffusion regulariser (Mardani et al., 2023).

One image mu is optimised with Adam (betas 0.9, 0.99), starting from the measurement's pseudo-inverse
(`A_pinv` if the operator has one, else zeros). Over the prior's ladder descending (the strided
DDPM chain, 1000 levels by default), with fresh noise eps and x_t = mu + sigma_t * eps (EDM
variables; eps_hat = (x_t - D(x_t, sigma_t)) / sigma_t is the network's noise prediction), one Adam
step on

    mean(|y - A(mu)|^2) / 2  +  lam * sigma_t * mean(stopgrad(eps_hat - eps) * mu)

where sigma_t = sqrt(1 - alpha_bar_t) / sqrt(alpha_bar_t) (the released code's "linear" weighting,
lam = 0.25, lr = 0.1). As released, both terms are means over elements (of the measurement and of
the image respectively); they are taken per image, so results do not depend on the batch size.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..protocols import Denoiser, Operator
from ..seeding import StepNoise
from .common import Loop, Trace, check_start
from .ddpm import chain_alpha_bars


def reddiff(prior: Denoiser, operator: Operator, y: Tensor, x_start: Tensor | None = None, seed: int | Sequence[int] = 0, *,
            steps: int = 1000, lr: float = 0.1, lam: float = 0.25, betas: Sequence[float] = (0.9, 0.99),
            shape: Sequence[int] | None = None, on_nan: str = "raise", check_every: int = 1,
            trace: Trace | None = None, progress: bool = True) -> Tensor:
    """Restore x from y = A(x) + noise with RED-diff; `x_start` replaces the pseudo-inverse start (image units)."""
    shape = tuple(shape) if shape is not None else operator.input_shape(y)
    if x_start is not None:
        check_start(x_start, shape)
    start = x_start if x_start is not None else pseudo_inverse_start(operator, y, shape)
    mu = start.detach().to(device=y.device, dtype=torch.float32).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([mu], lr=lr, betas=tuple(betas))
    noise = StepNoise(seed, shape[0], "reddiff", y.device)
    abar = chain_alpha_bars(prior, steps, "strided")
    loop = Loop("RED-diff", len(abar), y, operator.noise_sigma, on_nan, check_every, f"try a smaller lr (now {lr})",
                trace, progress)
    for i in loop:
        ab = abar[i]
        sigma = math.sqrt((1 - ab) / ab)
        eps = noise(shape[1:])
        with torch.no_grad():
            x_t = mu + sigma * eps
            eps_hat = (x_t - prior.denoise(x_t, sigma)) / sigma
        with torch.enable_grad():
            fit = (y - operator.A(mu)).flatten(1).pow(2).mean(dim=1) / 2
            regulariser = ((eps_hat - eps) * mu).flatten(1).mean(dim=1)
            optimizer.zero_grad(set_to_none=True)
            (fit + lam * sigma * regulariser).sum().backward()
        optimizer.step()
        with torch.no_grad():
            mu.copy_(loop.check(i, mu, 2 * fit.detach() * y[0].numel()))
        loop.record(i, sigma, fit, None, mu.detach().clone())
    return mu.detach()


def pseudo_inverse_start(operator: Operator, y: Tensor, shape: Sequence[int]) -> Tensor:
    """A_pinv(y) if the operator has a pseudo-inverse, else zeros (the non-linear operators)."""
    with torch.no_grad():
        return operator.A_pinv(y) if operator.supports("pinv") else torch.zeros(shape, device=y.device)
