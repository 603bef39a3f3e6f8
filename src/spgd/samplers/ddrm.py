"""DDRM: Denoising Diffusion Restoration Models (Kawar, Elad, Ermon, Song; NeurIPS 2022).

A variational DDIM-like chain in the spectral space of the operator's SVD A = U diag(s) V^T (EDM
variables; x_bar = V^T x, y_bar_i = (U^T y)_i / s_i, sigma_y = `operator.noise_sigma`). From level
sigma to sigma' with x0 = D(x, sigma) and eps = (x - x0) / sigma (the network's noise estimate),
coordinate by coordinate, with z ~ N(0, 1) fresh:

    s_i = 0 (missing):                 x'_i = x0_i + sqrt(1 - eta^2) sigma' eps_i + eta sigma' z_i
    s_i sigma' < sigma_y (less noisy):  x'_i = x0_i + sqrt(1 - eta^2) sigma' s_i (y_bar_i - x0_i) / sigma_y
                                               + eta sigma' z_i
    s_i sigma' > sigma_y (noisier):     x'_i = (1 - eta_b) x0_i + eta_b y_bar_i
                                               + sqrt(sigma'^2 - eta_b^2 sigma_y^2 / s_i^2) z_i

(ties s_i sigma' = sigma_y count as missing, as in the released code; s_i (y_bar_i - x0_i) is
computed as (U^T y)_i - s_i x0_i, never dividing by s). The chain starts at the top level with
x_bar_i ~ N(y_bar_i, sigma_T^2 - sigma_y^2 / s_i^2) where s_i sigma_T > sigma_y, N(0, sigma_T^2) elsewhere;
the last step goes to sigma' = 0, so the output is x0 at the lowest level. Levels: the strided
chain of the prior's ladder (`steps` = 20: t = 950, 900, ..., 0 on the 1000-level ladder, as
released). Published settings (every task of the release): 20 steps, eta = 0.85, eta_b = 1.

Deviations from the released code (bahjat-kawar/ddrm):
- The state is kept in EDM units. The release divides its initial state by sigma_T instead of
  multiplying it by sqrt(alpha_bar_T) (a factor 1 / sqrt(1 - alpha_bar_T) = 1.00005 at t = 950);
  here the start is exactly the state at sigma_T.
- Singular values at or below `svd_cutoff` (3e-2) count as zero, for every operator: the release
  zeroes 1-D singular values below 3e-2 inside its bicubic-SR and blur operators (so their 2-D
  products can be as small as 9e-4 there), which changes the operator itself. Here the operator's
  SVD is exact and the cutoff is a sampler setting on the 2-D values (inpainting, average-pool SR
  and the antialiased bicubic SR have none below 0.1, so it only matters for blurs).
- Singular values that are zero (or cut) are "missing" coordinates also when sigma_y > 0; the
  release would put a truncated zero inside its measurement into the "less noisy" branch.
- One standard normal draw per coordinate and step (the release draws one per branch), drawn in
  image space and rotated by V^T, per image from the seed.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..protocols import SVD, Denoiser, Operator
from ..seeding import StepNoise
from .common import Loop, Trace, check_start, require, start_noise
from .ddpm import chain_sigmas


class Spectral:
    """The measurement in the SVD's coordinates: U^T y, which coordinates carry data, and y_bar there."""

    def __init__(self, svd: SVD, y: Tensor, noise_sigma: float, cutoff: float) -> None:
        self.svd, self.sigma_y = svd, float(noise_sigma)
        self.uty = svd.U_adjoint(y)
        self.s = svd.s.expand_as(self.uty)
        self.seen = self.s > cutoff
        self.ybar = torch.where(self.seen, self.uty / torch.where(self.seen, self.s, torch.ones_like(self.s)), 0.0)


def ddrm_step(m: Spectral, x0bar: Tensor, epsbar: Tensor, zbar: Tensor, sigma_next: float, eta: float,
              eta_b: float) -> Tensor:
    """One DDRM step in spectral coordinates (see the module docstring); DDNM+ is this with eta_b = 1."""
    return spectral_step(m, x0bar, epsbar, sigma_next, math.sqrt(1 - eta ** 2), eta, zbar, zbar, eta_b)


def spectral_step(m: Spectral, x0bar: Tensor, epsbar: Tensor, sigma_next: float, keep: float, kick_weight: float,
                  kick: Tensor, spread: Tensor, eta_b: float) -> Tensor:
    """The DDRM step with its random parts given: `keep` weighs eps (DDRM: sqrt(1 - eta^2)), `kick_weight`
    `kick` is the added noise (DDRM: eta z) of the missing and less-noisy coordinates, `spread` the unit
    direction that spreads the noisier ones (DDRM: z). DeqIR passes deterministic ones (its shared noise)."""
    s, sigma_y = m.s, m.sigma_y
    missing = x0bar + keep * sigma_next * epsbar + kick_weight * sigma_next * kick
    less_noisy_mask = m.seen & (s * sigma_next < sigma_y)
    noisier_mask = m.seen & (s * sigma_next > sigma_y)
    if sigma_y > 0:
        less_noisy = (x0bar + keep * sigma_next * (m.uty - s * x0bar) / sigma_y
                      + kick_weight * sigma_next * kick)
        variance = (sigma_next ** 2 - (eta_b * sigma_y) ** 2 / torch.where(noisier_mask, s, torch.ones_like(s)) ** 2)
    else:
        less_noisy = missing
        variance = torch.full_like(s, sigma_next ** 2)
    noisier = (1 - eta_b) * x0bar + eta_b * m.ybar + variance.clamp_min(0).sqrt() * spread
    return torch.where(noisier_mask, noisier, torch.where(less_noisy_mask, less_noisy, missing))


def ddrm(prior: Denoiser, operator: Operator, y: Tensor, x_start: Tensor | None = None,
         seed: int | Sequence[int] = 0, *, steps: int = 20, eta: float = 0.85, eta_b: float = 1.0,
         svd_cutoff: float = 3e-2, shape: Sequence[int] | None = None, on_nan: str = "raise", check_every: int = 1,
         trace: Trace | None = None, progress: bool = True) -> Tensor:
    """Restore x from y = A(x) + noise with DDRM; `x_start` is the state at the top level (EDM units)."""
    require(operator, "svd", "ddrm")
    if not (0 <= eta <= 1 and 0 <= eta_b <= 1):
        raise ValueError(f"need 0 <= eta <= 1 and 0 <= eta_b <= 1, got {eta} and {eta_b}")
    shape = tuple(shape) if shape is not None else operator.input_shape(y)
    sigmas = chain_sigmas(prior, steps, "strided") + [0.0]
    noise = StepNoise(seed, shape[0], "ddrm", y.device)
    with torch.no_grad():
        m = Spectral(operator.svd(shape, y.device), y, operator.noise_sigma, svd_cutoff)
        if x_start is not None:
            check_start(x_start, shape)
            x = x_start.to(device=y.device, dtype=torch.float32).clone()
        else:
            zbar = m.svd.V_adjoint(start_noise(shape, 1.0, seed, y.device))
            informed = m.seen & (m.s * sigmas[0] > m.sigma_y)
            spread = (sigmas[0] ** 2 - m.sigma_y ** 2 / torch.where(informed, m.s, torch.ones_like(m.s)) ** 2)
            x = m.svd.V(torch.where(informed, m.ybar + spread.clamp_min(0).sqrt() * zbar, sigmas[0] * zbar))
    loop = Loop("DDRM", steps, y, operator.noise_sigma, on_nan, check_every,
                "check the measurement, its noise_sigma and the operator", trace, progress)
    for i in loop:
        with torch.no_grad():
            x0 = prior.denoise(x, sigmas[i])
            eps = (x - x0) / sigmas[i]
            loss = (operator.A(x0) - y).flatten(1).pow(2).sum(dim=1)
            zbar = m.svd.V_adjoint(noise(shape[1:]))
            x = m.svd.V(ddrm_step(m, m.svd.V_adjoint(x0), m.svd.V_adjoint(eps), zbar, sigmas[i + 1], eta, eta_b))
        x = loop.end_step(i, x, loss, sigmas[i], x0, scale=1 + sigmas[i + 1])
    return x.detach()
