"""PnP-DM: Plug-and-play diffusion-model priors for principled posterior sampling (Wu et al., NeurIPS 2024).

A split Gibbs sampler on pi(x, z) ~ exp(-||y - A(z)||^2 / (2 sigma_y^2) - ||x - z||^2 / (2 rho^2)) p(x),
with rho annealed, rho_k = max(rho_0 decay^k, rho_min), k = 0 .. K-1:

1. likelihood step, z_k ~ p(z | x_k, y) ~ exp(-||y - A(z)||^2 / (2 sigma_y^2) - ||z - x_k||^2 / (2 rho_k^2)):
   - exactly, through the operator's SVD when it has one: in V-coordinates the precision is
     s^2 / sigma_y^2 + 1 / rho^2, the mean (s U^T y / sigma_y^2 + V^T x / rho^2) / precision;
   - otherwise (non-linear operators, blurs without SVD) by `langevin_steps` steps of
     z <- z - lr grad_z [||A(z) - y||^2 / (2 sigma_y^2) + ||z - x_k||^2 / (2 rho_k^2)] + sqrt(2 lr) n, from z = x_k;
2. prior step, x_{k+1} ~ p(x | z_k) ~ p(x) N(z_k; x, rho_k^2 I): the reverse diffusion from noise level
   rho_k started at z_k (EDM's denoising-posterior sampler), Euler-Maruyama steps of the reverse SDE
   x <- x + (sigma' - sigma) (2 / sigma) (x - D(x, sigma)) + sqrt(2 sigma (sigma - sigma')) n over
   [rho_k] + the levels below rho_k of a `diffusion_steps`-point EDM poly-7 grid from sigma_max = 80 to
   sigma_min = 0.002 (clamped to the prior's range), then a last step to 0 that returns D(x, sigma_min).

The start x_0 is A^+ y when the operator has a pseudo-inverse, else standard normal noise (the
release's choice for phase retrieval). The result is the mean of `samples` iterates x_{k+1} taken
every (K - burn_in) // samples iterations back from the last (20 of iterations 40..99 by default);
samples = 1 returns the last iterate, a posterior sample. Published settings (FFHQ-256 deblurring
and 4x SR, the defaults): K = 100, rho_0 = 10, decay 0.9, rho_min = 0.3, a 100-point grid, 40
burn-in iterations, 20 samples; phase retrieval rho_min = 0.1 with Langevin lr 1e-4, 100 steps.
About 3,000 network evaluations per image with these settings.

Deviations from the released code (zihuiwu/PnP-DM-public, edm_sde mode):
- The prior step starts exactly at rho_k (prepended to the grid's levels below it); the release
  starts at the first grid level below rho_k, up to one grid step lower.
- Its last step to sigma = 0 is an Euler step of the SDE without noise, returning 2 D - x at the
  lowest level (noise of std ~sigma_min left); here it returns D (the probability-flow limit).
- The exact Gaussian likelihood step is used for every operator with an SVD (the release has it
  for its SVD operators and circular blurs: here also reflect-padded separable blurs); others use
  Langevin (the release: phase retrieval and coded diffraction).
- sigma_y is `operator.noise_sigma`, in [-1, 1] units as in the release; it must be > 0.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..protocols import SVD, Denoiser, Operator
from ..schedule import clamp_range, sigma_schedule
from ..seeding import StepNoise
from .common import Loop, Trace, check_start, start_noise


def pnpdm(prior: Denoiser, operator: Operator, y: Tensor, x_start: Tensor | None = None,
          seed: int | Sequence[int] = 0, *, steps: int = 100, rho: float = 10.0, rho_decay: float = 0.9,
          rho_min: float = 0.3, diffusion_steps: int = 100, sigma_max: float = 80.0, sigma_min: float = 0.002,
          langevin_steps: int = 100, langevin_lr: float = 1e-4, burn_in: int = 40, samples: int = 20,
          shape: Sequence[int] | None = None, on_nan: str = "raise", check_every: int = 1,
          trace: Trace | None = None, progress: bool = True) -> Tensor:
    """Restore x from y = A(x) + noise with PnP-DM; `x_start` replaces the start x_0 (image units)."""
    sigma_y = operator.noise_sigma
    if sigma_y <= 0:
        raise ValueError("pnpdm samples exp(-||y - A(z)||^2 / (2 noise_sigma^2)) and needs noise_sigma > 0, "
                         f"got {sigma_y}")
    if not (steps >= 1 and 0 < rho_min <= rho and 0 < rho_decay <= 1 and diffusion_steps >= 1):
        raise ValueError(f"need steps >= 1, 0 < rho_min <= rho, 0 < rho_decay <= 1 and diffusion_steps >= 1, "
                         f"got {steps}, {rho_min}, {rho}, {rho_decay} and {diffusion_steps}")
    stride = (steps - burn_in) // samples if samples >= 1 else 0
    if samples < 1 or burn_in < 0 or stride < 1:
        raise ValueError(f"need samples >= 1 and burn_in + samples <= steps, got burn_in={burn_in}, "
                         f"samples={samples}, steps={steps}")
    kept = {steps - 1 - j * stride for j in range(samples)}
    shape = tuple(shape) if shape is not None else operator.input_shape(y)
    top, bottom = clamp_range(sigma_max, sigma_min, (prior.sigma_min, prior.sigma_max))
    grid = [g for g in sigma_schedule(diffusion_steps, top, max(bottom, 1e-6)).tolist() if g > 0]
    svd = operator.svd(shape, y.device) if operator.supports("svd") else None
    with torch.no_grad():
        if x_start is not None:
            check_start(x_start, shape)
            x = x_start.to(device=y.device, dtype=torch.float32).clone()
        elif operator.supports("pinv"):
            x = operator.A_pinv(y)
        else:
            x = start_noise(shape, 1.0, seed, y.device)
        uty = svd.U_adjoint(y) if svd is not None else None
    likelihood_noise = StepNoise(seed, shape[0], "pnpdm-likelihood", y.device)
    prior_noise = StepNoise(seed, shape[0], "pnpdm-prior", y.device)
    loop = Loop("PnP-DM", steps, y, sigma_y, on_nan, check_every,
                f"try a smaller langevin_lr (now {langevin_lr})" if svd is None else
                "check the measurement, its noise_sigma and the operator", trace, progress)
    total = torch.zeros_like(x)
    for k in loop:
        rho_k = min(max(rho * rho_decay ** k, rho_min), top)
        if svd is not None:
            with torch.no_grad():
                z = _gaussian_likelihood_step(svd, uty, x, sigma_y, rho_k, likelihood_noise)
        else:
            z = _langevin_likelihood_step(operator, y, x, sigma_y, rho_k, langevin_steps, langevin_lr,
                                          likelihood_noise)
        with torch.no_grad():
            x = denoising_posterior_sample(prior, z, rho_k, grid, prior_noise)
            loss = (operator.A(x) - y).flatten(1).pow(2).sum(dim=1)
        x = loop.end_step(k, x, loss, rho_k, z)
        if k in kept:
            total = total + x
    return (total / samples).detach() if not loop.all_failed else x.detach()


def _gaussian_likelihood_step(svd: SVD, uty: Tensor, x: Tensor, sigma_y: float, rho: float,
                              noise: StepNoise) -> Tensor:
    """An exact draw of N(mean, precision^-1) in the SVD's coordinates (module docstring)."""
    s = svd.s
    damping = s ** 2 + (sigma_y / rho) ** 2  # precision * sigma_y^2
    mean = (s * uty + (sigma_y / rho) ** 2 * svd.V_adjoint(x)) / damping
    return svd.V(mean + sigma_y / damping.sqrt() * svd.V_adjoint(noise(x.shape[1:])))


def _langevin_likelihood_step(operator: Operator, y: Tensor, x: Tensor, sigma_y: float, rho: float, steps: int,
                              lr: float, noise: StepNoise) -> Tensor:
    """`steps` unadjusted Langevin steps on the likelihood step's density, from z = x."""
    z = x.detach()
    for _ in range(steps):
        with torch.enable_grad():
            z_in = z.requires_grad_(True)
            fit = (operator.A(z_in) - y).flatten(1).pow(2).sum(dim=1) / (2 * sigma_y ** 2)
            grad, = torch.autograd.grad(fit.sum(), z_in)
        with torch.no_grad():
            z = z.detach() - lr * (grad + (z - x) / rho ** 2) + math.sqrt(2 * lr) * noise(z.shape[1:])
    return z.detach()


def denoising_posterior_sample(prior: Denoiser, z: Tensor, rho: float, grid: Sequence[float],
                               noise: StepNoise) -> Tensor:
    """A draw of p(x | z) ~ p(x) N(z; x, rho^2 I): the reverse SDE from level rho, started at z (module docstring)."""
    levels = [rho] + [g for g in grid if g < rho]
    x = z
    for sigma, sigma_next in zip(levels[:-1], levels[1:]):
        x = x + (sigma_next - sigma) * 2 / sigma * (x - prior.denoise(x, sigma)) \
            + math.sqrt(2 * sigma * (sigma - sigma_next)) * noise(x.shape[1:])
    return prior.denoise(x, levels[-1])
