"""PiGDM: Pseudoinverse-Guided Diffusion Models for inverse problems (Song, Vahdat, Mardani, Kautz; ICLR 2023).

A DDIM chain over the strided levels of the prior's ladder (100 steps: t = 990, ..., 0, then
sigma' = 0) with pseudo-inverse guidance through a vector-Jacobian product of the denoiser. The
paper approximates p(x0 | x_t) by N(D(x_t), r_t^2 I), r_t^2 = sigma^2 / (1 + sigma^2) (the VP
posterior variance of x0 ~ N(0, I)), so for linear A and Gaussian noise of std sigma_y

    grad_x log p(y | x) ~ J^T A^T (r_t^2 A A^T + sigma_y^2 I)^-1 (y - A D(x, sigma)),   J = dD/dx.

In EDM variables, from sigma to sigma' with x0 = D(x, sigma), eps = (x - x0) / sigma:

    x' = x0 + sqrt(sigma'^2 - c^2) eps + c z + weight * r_t^2 * grad_x log p(y | x),
    c  = eta sigma' sqrt(1 - sigma'^2 / sigma^2)                      (DDIM's eta)

i.e. the guidance added is J^T A^T (A A^T + sigma_y^2 / r_t^2 I)^-1 (y - A x0), computed through the
operator's SVD as J^T V diag(s / (s^2 + sigma_y^2 / r_t^2)) U^T (y - A x0). For sigma_y = 0 this is
the noise-free form J^T (A^+ y - A^+ A x0), computed with the operator's pseudo-inverse (truncated
for blurs); so it is too for an operator with a pseudo-inverse but no SVD (e.g. a reflect-padded
motion blur), whatever sigma_y: the form of the reference code, which has only that. The start is x_T = A^+ y + sigma_T z. Published settings (the reference code's config):
100 steps, eta = 0, weight 1; no FFHQ-256 settings were published.

There is no stand-alone official release; the reference implementation is RED-diff's
`algos/pgdm.py` (NVlabs, non-commercial licence: nothing of it is used here beyond the facts above,
checked against InverseBench's independent re-implementation). Deviations from it:
- The noisy guidance (sigma_y > 0) is the paper's; the reference code only has the noise-free form.
- Its inpainting-specific branch (observed pixels of x0 replaced by y, the guidance masked) is not
  reproduced: samplers do not branch on the operator. Its `awd=False`, `cond_awd` and `mcg`
  variants are not offered (defaults: awd on, the others off).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..protocols import Denoiser, Operator
from ..seeding import StepNoise
from .common import Loop, Trace, check_start, require, start_noise
from .ddpm import chain_sigmas


def pigdm(prior: Denoiser, operator: Operator, y: Tensor, x_start: Tensor | None = None,
          seed: int | Sequence[int] = 0, *, steps: int = 100, eta: float = 0.0, weight: float = 1.0,
          shape: Sequence[int] | None = None, on_nan: str = "raise", check_every: int = 1,
          trace: Trace | None = None, progress: bool = True) -> Tensor:
    """Restore x from y = A(x) + noise with PiGDM; `x_start` is the state at the top level (EDM units)."""
    require(operator, "pinv", "pigdm")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    shape = tuple(shape) if shape is not None else operator.input_shape(y)
    sigmas = chain_sigmas(prior, steps, "strided") + [0.0]
    sigma_y = operator.noise_sigma
    svd = operator.svd(shape, y.device) if operator.supports("svd") and sigma_y > 0 else None
    with torch.no_grad():
        if x_start is not None:
            check_start(x_start, shape)
            x = x_start.to(device=y.device, dtype=torch.float32).clone()
        else:
            x = operator.A_pinv(y) + start_noise(shape, sigmas[0], seed, y.device)
        pinv_y = operator.A_pinv(y) if svd is None else None
    noise = StepNoise(seed, shape[0], "pigdm", y.device)
    loop = Loop("PiGDM", steps, y, sigma_y, on_nan, check_every, f"try a smaller weight (now {weight})", trace, progress)
    for i in loop:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        r2 = sigma ** 2 / (1 + sigma ** 2)
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0 = prior.denoise(x_in, sigma)
            with torch.no_grad():
                residual = y - operator.A(x0)
                if svd is not None:
                    s = svd.s
                    v = svd.V(s / (s ** 2 + sigma_y ** 2 / r2) * svd.U_adjoint(residual))
                else:
                    v = pinv_y - operator.A_pinv(operator.A(x0))
            guidance, = torch.autograd.grad(x0, x_in, grad_outputs=v)
        with torch.no_grad():
            x0 = x0.detach()
            eps = (x - x0) / sigma
            c = eta * sigma_next * math.sqrt(max(0.0, 1 - sigma_next ** 2 / sigma ** 2))
            x = x0 + math.sqrt(max(0.0, sigma_next ** 2 - c ** 2)) * eps + weight * guidance
            if c > 0:
                x = x + c * noise(shape[1:])
            loss = residual.flatten(1).pow(2).sum(dim=1)
        x = loop.end_step(i, x, loss, sigma, x0, scale=1 + sigma_next)
    return x.detach()
