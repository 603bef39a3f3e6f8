"""DiffPIR: Denoising Diffusion Models for Plug-and-Play Image Restoration (Zhu et al., CVPR-W 2023).

Half-quadratic splitting with the diffusion model as the denoiser, over N levels sigma_0 > ... >
sigma_{N-1} of the prior's ladder in DiffPIR's quadratic spacing (t_j = 999 - min(floor(1000
sqrt(j / (N - 1))), 999) on the 1000-level ladder: dense near t = 0). In EDM variables, for j < N - 1:

    x0    = D(x_j, sigma_j)                                              (denoise)
    x0'   = argmin_z ||y - A z||^2 + rho_j ||z - x0||^2                   (data step, closed form)
          = V diag(1 / (s^2 + rho_j)) (s U^T y + rho_j V^T x0)            (through the operator's SVD)
    eps   = (x_j - x0') / sigma_j                                         (effective noise, from the corrected x0')
    x_j+1 = x0' + sigma_j+1 (sqrt(1 - zeta) eps + sqrt(zeta) z)

with rho_j = lam * sigma_n^2 / sigma_j^2 and, as in the released code, sigma_n = max(0.001, sigma_y / 2):
the noise level in [0, 1] image units (sigma_y = `operator.noise_sigma` is in [-1, 1] units), so the
published lam apply unchanged (in library units rho_j = (lam / 4) max(0.002, sigma_y)^2 / sigma_j^2).
The result is the state at the last level sigma_{N-1} (t = 0, sigma = 0.01), not x0', as released.

The closed-form data step needs the operator's SVD: inpainting, both SR filters, circular blurs
(the FFT solve of the release) and separable (e.g. Gaussian) reflect-padded blurs. Published
settings: 100 steps, lam = 7, zeta = 0.3 (deblurring; the defaults); super-resolution zeta = 0.25
(lam swept over 2..12 in the release); inpainting 20 steps, lam = 1, zeta = 1.

Deviations from the released code (yuanzhi-zhu/DiffPIR):
- Start: x_T = A^+ y + sigma_T z at the top level (the release starts SR from the bicubic
  upsampling of y at t = 999, and deblurring/inpainting from y diffused to t_start; the paper from
  pure noise). A^+ y's share of the state is 1/sigma_T = 0.6% there.
- The last grid point's denoiser call, whose output the release discards, is not made (N - 1
  network evaluations for N levels; the result is the same).
- The data step is solved for the operator that made y: the release's SR solver uses a bicubic
  kernel approximation (USRNet's closed form for blur + decimation) while y is made with
  MATLAB-style imresize, and its inpainting output overwrites the observed pixels with y at the end.
- No DDIM eta (every published config has eta = 0), no gradient-step data term for non-linear
  operators (the release's `sub_1_analytic=False` variant).
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


def data_rho(lam: float, noise_sigma: float, sigma: float) -> float:
    """DiffPIR's rho_t = lam sigma_n^2 / sigma_t^2, sigma_n = max(0.001, noise_sigma / 2) (released code's units)."""
    return lam * max(0.001, noise_sigma / 2) ** 2 / sigma ** 2


def diffpir(prior: Denoiser, operator: Operator, y: Tensor, x_start: Tensor | None = None,
            seed: int | Sequence[int] = 0, *, steps: int = 100, lam: float = 7.0, zeta: float = 0.3,
            shape: Sequence[int] | None = None, on_nan: str = "raise", check_every: int = 1,
            trace: Trace | None = None, progress: bool = True) -> Tensor:
    """Restore x from y = A(x) + noise with DiffPIR; `x_start` is the state at the top level (EDM units)."""
    require(operator, "svd", "diffpir")
    if steps < 2:
        raise ValueError(f"diffpir needs steps >= 2 (the last level is where it stops), got {steps}")
    if not 0 <= zeta <= 1 or lam <= 0:
        raise ValueError(f"need 0 <= zeta <= 1 and lam > 0, got zeta={zeta} and lam={lam}")
    shape = tuple(shape) if shape is not None else operator.input_shape(y)
    sigmas = chain_sigmas(prior, steps, "quadratic")
    with torch.no_grad():
        svd = operator.svd(shape, y.device)
        s = svd.s
        sty = s * svd.U_adjoint(y)  # s U^T y: the data term of the closed form
        if x_start is not None:
            check_start(x_start, shape)
            x = x_start.to(device=y.device, dtype=torch.float32).clone()
        else:
            pinv = operator.A_pinv(y) if operator.supports("pinv") else torch.zeros(shape, device=y.device)
            x = pinv + start_noise(shape, sigmas[0], seed, y.device)
    noise = StepNoise(seed, shape[0], "diffpir", y.device)
    loop = Loop("DiffPIR", steps - 1, y, operator.noise_sigma, on_nan, check_every, f"try a larger lam (now {lam})",
                trace, progress)
    for i in loop:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        with torch.no_grad():
            x0 = prior.denoise(x, sigma)
            loss = (operator.A(x0) - y).flatten(1).pow(2).sum(dim=1)  # the prior's estimate's fit (before the data step)
            rho = data_rho(lam, operator.noise_sigma, sigma)
            x0 = svd.V((sty + rho * svd.V_adjoint(x0)) / (s ** 2 + rho))
            eps = (x - x0) / sigma
            fresh = noise(shape[1:]) if zeta > 0 else torch.zeros_like(x)
            x = x0 + sigma_next * (math.sqrt(1 - zeta) * eps + math.sqrt(zeta) * fresh)
        x = loop.end_step(i, x, loss, sigma, x0, scale=1 + sigma_next)
    return x.detach()
