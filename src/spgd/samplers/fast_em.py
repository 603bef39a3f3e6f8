"""Fast Diffusion EM: blind restoration, the operator's unknown parameters estimated with the image
(Laroche, Almansa, Coupeté, WACV 2024; facts in ../shared/reference/real-photos.md §5.1).

One diffusion run whose every step is an E-step on the image with the current operator, followed by an M-step
on the operator: at level sigma_j,

    x0   = D(x_j, sigma_j)                                          (denoise)
    refit the operator from (x0, y)                                 (M-step, every `refit_every` steps)
    x0'  = argmin_z ||y - A z||^2 + rho_j ||z - x0||^2              (data step with the refitted A)
    x_j+1 = x0' + sigma_j+1 (sqrt(1 - zeta) eps + sqrt(zeta) z),  eps = (x_j - x0') / sigma_j

on DiffPIR's quadratic ladder with its rho_j = lam sigma_n^2 / sigma_j^2 (`diffpir.data_rho`). The operator
answers the M-step itself (`refit`: a blind blur's constrained least-squares kernel, kept non-negative, summing
to one and centred after every update, as the fast release re-centres) and where it starts (`start_estimate`).

Deviations from the release (claroche-r/FastDiffusionEM): the E-step is DiffPIR's half-quadratic data step, not
PiGDM's guidance (no gradient through the network: a third of the cost on a CPU), solved by conjugate gradients
with the operator's exact adjoint (its reflect-padded borders included) instead of a circular FFT; the M-step runs
every `refit_every` steps (the release: every step) below the level `refit_below`; the blind blur starts from a
blob, not a Dirac (from a Dirac it stays there); its kernel prior is a smoothness penalty unless the operator is
given the trained kernel denoiser (`kernel_prior`, half-quadratic splitting as released). Measured with spgd's
natural patch prior it lands below the blurred input (BENCHMARKS.md, "Blind deblurring").
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..protocols import Denoiser, Operator
from ..seeding import StepNoise
from .common import Loop, Trace, require, start_noise
from .ddpm import chain_sigmas
from .diffpir import data_rho


def _per_image_dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).flatten(1).sum(dim=1).view(-1, *[1] * (a.dim() - 1))


def data_step(operator: Operator, y: Tensor, x0: Tensor, rho: float, iterations: int) -> Tensor:
    """argmin_z ||y - A z||^2 + rho ||z - x0||^2 per image, by conjugate gradients on (A^T A + rho I) z =
    A^T y + rho x0 from z = x0 (`iterations` steps: few enough that a tiny rho still leans on x0)."""
    z = x0.clone()
    residual = operator.A_adjoint(y - operator.A(z))  # b - M z with M z = A^T A z + rho z and z = x0
    direction = residual.clone()
    norm = _per_image_dot(residual, residual)
    for _ in range(iterations):
        m_direction = operator.A_adjoint(operator.A(direction)) + rho * direction
        step = norm / _per_image_dot(direction, m_direction).clamp(min=1e-30)
        z = z + step * direction
        residual = residual - step * m_direction
        new_norm = _per_image_dot(residual, residual)
        direction = residual + (new_norm / norm.clamp(min=1e-30)) * direction
        norm = new_norm
    return z


def fast_em(prior: Denoiser, operator: Operator, y: Tensor, x_start: Tensor | None = None,
            seed: int | Sequence[int] = 0, *, steps: int = 100, passes: int = 1, lam: float = 7.0, zeta: float = 0.3,
            refit_every: int = 5, refit_below: float = 1.0, cg_iterations: int = 10,
            shape: Sequence[int] | None = None, on_nan: str = "raise", check_every: int = 1,
            trace: Trace | None = None, progress: bool = True) -> Tensor:
    """Restore x and the operator's unknown parameters from y; the operator keeps its last M-step's estimate.
    `passes` > 1 splits the `steps` evenly: the first pass is Fast EM, each further one a run from the top level
    with the operator fixed at the M-step on the previous pass's result (full Diffusion EM's outer loop).
    `refit_every` 0: the operator as given (non-blind: DiffPIR with a conjugate-gradient data step, for any
    operator with an adjoint). `x_start`: the state at the top level (EDM units), else A^T y plus noise."""
    if refit_every:
        require(operator, "refit", "fast_em")
    require(operator, "adjoint", "fast_em")
    if passes < 1 or steps < 2 * passes or refit_every < 0 or cg_iterations < 1:
        raise ValueError(f"fast_em needs passes >= 1, steps >= 2 per pass, refit_every >= 0 and cg_iterations >= 1, "
                         f"got {passes}, {steps}, {refit_every} and {cg_iterations}")
    if not 0 <= zeta <= 1 or lam <= 0:
        raise ValueError(f"need 0 <= zeta <= 1 and lam > 0, got zeta={zeta} and lam={lam}")
    shape = tuple(shape) if shape is not None else operator.input_shape(y)
    length = steps // passes
    sigmas = chain_sigmas(prior, length, "quadratic")
    if refit_every:
        operator.start_estimate(y)
    with torch.no_grad():
        start = start_noise(shape, sigmas[0], seed, y.device, x_start)
        if x_start is None:
            start = operator.A_adjoint(y) + start
    noise = StepNoise(seed, shape[0], "fast_em", y.device)
    loop = Loop("Fast EM", passes * (length - 1), y, operator.noise_sigma, on_nan, check_every,
                f"try a larger lam (now {lam})", trace, progress)
    x = start
    for j in loop:
        i, first = j % (length - 1), j < length - 1
        if i == 0 and not first:  # a pass ended: the M-step on its result, then the next pass from the start
            operator.refit(x, y)
            x = start
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        with torch.no_grad():
            x0 = prior.denoise(x, sigma)
            if first and refit_every and sigma <= refit_below and i % refit_every == 0:
                operator.refit(x0, y)
            loss = (operator.A(x0) - y).flatten(1).pow(2).sum(dim=1)
            x0 = data_step(operator, y, x0, data_rho(lam, operator.noise_sigma, sigma), cg_iterations)
            eps = (x - x0) / sigma
            fresh = noise(shape[1:]) if zeta > 0 else torch.zeros_like(x)
            x = x0 + sigma_next * (math.sqrt(1 - zeta) * eps + math.sqrt(zeta) * fresh)
        x = loop.end_step(j, x, loss, sigma, x0, scale=1 + sigma_next)
    return x.detach()
