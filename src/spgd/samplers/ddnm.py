"""DDNM and DDNM+: zero-shot restoration with the Denoising Diffusion Null-space Model (Wang, Yu, Zhang; ICLR 2023).

A DDIM chain over the strided levels of the prior's ladder (100 steps: t = 990, 980, ..., 0 on the
1000-level ladder, then sigma' = 0; the start x_T ~ N(0, I) at t = 990, VP units, as released). In
EDM variables, from level sigma to sigma' with x0 = D(x, sigma) and eps = (x - x0) / sigma the
network's own noise estimate (not recomputed from the corrected x0, as released):

DDNM (`ddnm`, noise-free consistency; needs A^+ and `null`):

    x0' = x0 - A^+ (A x0 - y) = A^+ y + (I - A^+ A) x0                         (Eq. 11-13)
    x'  = x0' + sigma' (eta z + sqrt(1 - eta^2) eps)

so the output (sigma' = 0 after the last step) satisfies A x = A A^+ y. The same chain with eta = 0
is the one DeqIR solves as a fixed point (`DDNMChain`, shared with `deqir`).

DDNM+ (`ddnm_plus`, noise-aware; needs the operator's SVD A = U diag(s) V^T): the range-space
correction is scaled per singular direction, x0' = x0 - Sigma_t A^+ (A x0 - y) with
Sigma_t = V diag(lambda_i) V^T (Eq. 17), and the noise is shaped accordingly (Phi_t = V diag(gamma_i) V^T,
the release's "Eq. 51"): in V-coordinates, y_bar_i = (U^T y)_i / s_i,

    s_i = 0:                    x'_i = x0_i + eta sigma' z_i + sqrt(1 - eta^2) sigma' eps_i
    sigma' >= sigma_y / s_i:    lambda_i = 1,  x'_i = y_bar_i + sqrt(sigma'^2 - sigma_y^2 / s_i^2) z_i
    sigma' <  sigma_y / s_i:    lambda_i = s_i sigma' sqrt(1 - eta^2) / sigma_y,
                                x'_i = x0_i - lambda_i (x0_i - y_bar_i) + eta sigma' z_i

which is DDRM's step with eta_b = 1 (`ddrm.ddrm_step`, shared); at sigma' = 0 the output is x0 with
no range correction, as released. With sigma_y = 0 DDNM+ is plain DDNM (as released).

Time-travel (RePaint's jump schedule, both samplers; `travel_length` L, `travel_repeat` r): on
reaching a level whose ladder slot k (counted from the bottom, k = 0 the last level) is a multiple
of L below T - L, the chain goes back up L levels r - 1 times, re-noising the last un-corrected
x0 there (x = x0 + sigma_up z), and walks down again. L = r = 1 (every shipped config) is no travel.

Published settings (all tasks of the release's evaluation): 100 steps, eta = 0.85, no time-travel.

Mask-Shift Restoration (`ddnm(mask_shift=True)`, the release's `hq_demo` for images larger than the prior):
tiles of the prior's size, stride half a tile, the last row and column flush with the edge, restored
one after the other in raster order, each by a complete run of the chain. At every step the tile's x0
is placed in the canvas of what is restored so far (A^+ y where nothing is yet), made consistent there
with the whole image's A^+ and null space, cut out again, and its overlap with finished tiles is
overwritten with their pixels: a hard known region, as in inpainting. The tiled prior's fixed-size
network (`tile_denoiser`) runs on the tiles. The image must be at least one tile on each side, as in
the release. Deviations: the release applies A per tile (exact for its average-pool SR on a 128-px
grid); here the consistency is the whole operator's, so it holds for any operator with A^+ (a blur or
the bicubic SR filter crosses tile borders). Each tile starts from its crop of one x_T draw (the
release starts every tile after the first from the previous tile's output, never redrawn). The finished
canvas is made consistent once more as a whole, so the result fits y as plain DDNM's does (per tile
that holds exactly only for operators that separate on the tiles). Noise-free chain only (DDNM, not DDNM+).

Deviations from the released code (wyhuai/DDNM):
- A jump back up L levels is one re-noising to the top of the jump; the release re-noises L times
  in a row, one level at a time, from the same x0, keeping only the last (the same distribution;
  other random draws).
- Singular values at or below `svd_cutoff` (3e-2) count as zero in DDNM+ (the release zeroes 1-D
  singular values below 3e-2 inside its blur operators; here the operator's SVD is exact and the
  cutoff a sampler setting, see `ddrm`).
- Random draws per image from the seed (DDNM+: in image space, rotated by V^T), so a batch equals
  runs of single images.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..protocols import Denoiser, Operator
from ..seeding import SeedLike, StepNoise
from ..tiles import tile_starts
from .common import DivergenceGuard, Loop, Trace, require, start_noise
from .ddpm import chain_alpha_bars
from .ddrm import Spectral, ddrm_step


class DDNMChain:
    """The DDIM + DDNM chain over `steps` strided levels (VP units), one step at a time. Differentiable: the
    samplers run it under `torch.no_grad`, DeqIR's gradients through it with autograd."""

    def __init__(self, prior: Denoiser, operator: Operator, y: Tensor, steps: int) -> None:
        ab_in = chain_alpha_bars(prior, steps, "strided")
        ab_out = ab_in[1:] + [1.0]
        self.prior, self.operator, self.steps = prior, operator, steps
        self.scale_in = [math.sqrt(a) for a in ab_in]
        self.scale_out = [math.sqrt(a) for a in ab_out]
        self.sigma_in = [math.sqrt((1 - a) / a) for a in ab_in]
        self.sigma_out = [math.sqrt((1 - a) / a) for a in ab_out]
        with torch.no_grad():
            self.b = operator.A_pinv(y)

    def predict(self, m: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """(x0, eps) in EDM units from the VP state x at chain level m."""
        x = x / self.scale_in[m]
        x0 = self.prior.denoise(x, self.sigma_in[m])
        return x0, (x - x0) / self.sigma_in[m]

    def consistent(self, x0: Tensor) -> Tensor:
        """A^+ y + (I - A^+ A) x0."""
        return self.b + self.operator.null(x0)

    def advance(self, m: int, x0: Tensor, eps: Tensor, eta: float = 0.0, noise: Tensor | None = None) -> Tensor:
        """x_{m+1} (VP units) from level m's prediction: x0' + sigma'_m (sqrt(1 - eta^2) eps + eta z)."""
        direction = eps if eta == 0 else math.sqrt(1 - eta ** 2) * eps + eta * noise
        return (self.consistent(x0) + self.sigma_out[m] * direction) * self.scale_out[m]


def travel_path(steps: int, length: int, repeat: int) -> list[int]:
    """The chain levels visited, 0 (top) .. steps (sigma = 0), with RePaint's jumps (module docstring)."""
    if length < 1 or repeat < 1:
        raise ValueError(f"need travel_length >= 1 and travel_repeat >= 1, got {length} and {repeat}")
    path = [0]
    for level in range(1, steps + 1):
        path.append(level)
        slot = steps - 1 - level  # ladder slot counted from the bottom level (0); -1 is sigma = 0
        if 0 <= slot < steps - length and slot % length == 0:
            for _ in range(repeat - 1):
                path += list(range(level - length, level + 1))
    return path


def ddnm(prior: Denoiser, operator: Operator, y: Tensor, x_start: Tensor | None = None,
         seed: int | Sequence[int] = 0, *, steps: int = 100, eta: float = 0.85, travel_length: int = 1,
         travel_repeat: int = 1, mask_shift: bool = False, shape: Sequence[int] | None = None, on_nan: str = "raise",
         check_every: int = 1, trace: Trace | None = None, progress: bool = True) -> Tensor:
    """Restore x from y = A(x) + noise with DDNM; `x_start` is x_T in VP units (standard normal).
    `mask_shift`: tile by tile, as the release's hq_demo (module docstring)."""
    require(operator, "pinv", "ddnm")
    run = dict(x_start=x_start, seed=seed, steps=steps, eta=eta, travel_length=travel_length,
               travel_repeat=travel_repeat, shape=shape, on_nan=on_nan, check_every=check_every, trace=trace,
               progress=progress)
    if mask_shift:
        return _mask_shift(prior, operator, y, **run)
    return _run("DDNM", prior, operator, y, svd_cutoff=None, **run)


def ddnm_plus(prior: Denoiser, operator: Operator, y: Tensor, x_start: Tensor | None = None,
              seed: int | Sequence[int] = 0, *, steps: int = 100, eta: float = 0.85, travel_length: int = 1,
              travel_repeat: int = 1, svd_cutoff: float = 3e-2, shape: Sequence[int] | None = None,
              on_nan: str = "raise", check_every: int = 1, trace: Trace | None = None, progress: bool = True) -> Tensor:
    """Restore x from y = A(x) + noise with DDNM+ (SVD version); `x_start` is x_T in VP units."""
    require(operator, "svd", "ddnm_plus")
    require(operator, "pinv", "ddnm_plus")
    return _run("DDNM+", prior, operator, y, x_start=x_start, seed=seed, steps=steps, eta=eta,
                travel_length=travel_length, travel_repeat=travel_repeat, svd_cutoff=svd_cutoff, shape=shape,
                on_nan=on_nan, check_every=check_every, trace=trace, progress=progress)


def _run(name: str, prior: Denoiser, operator: Operator, y: Tensor, *, x_start: Tensor | None,
         seed: SeedLike, steps: int, eta: float, travel_length: int, travel_repeat: int,
         svd_cutoff: float | None, shape: Sequence[int] | None, on_nan: str, check_every: int,
         trace: Trace | None, progress: bool) -> Tensor:
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    shape = tuple(shape) if shape is not None else operator.input_shape(y)
    path = travel_path(steps, travel_length, travel_repeat)
    x = start_noise(shape, 1.0, seed, y.device, x_start)
    chain = DDNMChain(prior, operator, y, steps)
    noise = StepNoise(seed, shape[0], "ddnm", y.device)  # one stream: with sigma_y = 0 DDNM+ is DDNM exactly
    spectral = None
    if svd_cutoff is not None and operator.noise_sigma > 0:
        with torch.no_grad():
            spectral = Spectral(operator.svd(shape, y.device), y, operator.noise_sigma, svd_cutoff)
    loop = Loop(name, len(path) - 1, y, operator.noise_sigma, on_nan, check_every,
                "check the measurement, its noise_sigma and the operator", trace, progress)
    x0 = None
    for i in loop:
        level, target = path[i], path[i + 1]
        last = i == len(path) - 2
        with torch.no_grad():
            if target < level:  # time-travel: re-noise the last prediction up to level `target`
                x = (x0 + chain.sigma_in[target] * noise(shape[1:])) * chain.scale_in[target]
                continue
            x0, eps = chain.predict(level, x)
            if spectral is None:
                x = chain.advance(level, x0, eps, eta, noise(shape[1:]) if eta > 0 else None)
            else:
                svd = spectral.svd
                zbar = svd.V_adjoint(noise(shape[1:]))
                out = ddrm_step(spectral, svd.V_adjoint(x0), svd.V_adjoint(eps), zbar, chain.sigma_out[level], eta,
                                1.0)
                x = svd.V(out) * chain.scale_out[level]
            fit = operator.A(x if last else x0) - y
            loss = fit.flatten(1).pow(2).sum(dim=1)
        x = loop.end_step(i, x, loss, chain.sigma_in[level], x0)
    return x.detach()


def _mask_shift(prior: Denoiser, operator: Operator, y: Tensor, *, x_start: Tensor | None, seed: SeedLike,
                steps: int, eta: float, travel_length: int, travel_repeat: int, shape: Sequence[int] | None,
                on_nan: str, check_every: int, trace: Trace | None, progress: bool) -> Tensor:
    """DDNM's Mask-Shift Restoration (module docstring): the chain run tile after tile over a canvas."""
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    tile_prior, tile = getattr(prior, "tile_denoiser", (prior, prior.image_size))
    shape = tuple(shape) if shape is not None else operator.input_shape(y)
    height, width = shape[-2:]
    if not tile:
        raise ValueError("DDNM's mask_shift needs a prior of a fixed size (its tile); this one states none")
    if height < tile or width < tile:
        raise ValueError(f"DDNM's mask_shift needs an image of at least one tile ({tile}x{tile}) on each side, "
                         f"got {height}x{width}; use it without mask_shift")
    path = travel_path(steps, travel_length, travel_repeat)
    x_T = start_noise(shape, 1.0, seed, y.device, x_start)
    chain = DDNMChain(tile_prior, operator, y, steps)
    noise = StepNoise(seed, shape[0], "ddnm", y.device)
    canvas = chain.b.clone()  # finished tiles, A^+ y elsewhere
    known = torch.zeros(height, width, dtype=torch.bool, device=y.device)
    spots = [(t, l) for t in tile_starts(height, tile, tile // 2) for l in tile_starts(width, tile, tile // 2)]
    per_tile = len(path) - 1
    guard = DivergenceGuard("DDNM mask-shift", y, operator.noise_sigma, on_nan, check_every,
                            "check the measurement, its noise_sigma and the operator", trace)
    bar = tqdm(total=len(spots) * per_tile, desc="DDNM mask-shift", disable=not progress, leave=False)
    for number, (top, left) in enumerate(spots, 1):
        window = (..., slice(top, top + tile), slice(left, left + tile))
        overlap = known[window[1:]]
        guard.sampler = f"DDNM mask-shift (tile {number} of {len(spots)})"
        guard.forget_losses()  # a tile's chain starts on new pixels: its fit is judged against its own history
        bar.set_description(f"DDNM mask-shift, tile {number}/{len(spots)}")
        x, x0 = x_T[window].clone(), None
        for i in range(per_tile):
            level, target = path[i], path[i + 1]
            last = i == per_tile - 1
            with torch.no_grad():
                if target < level:  # time-travel, as in `_run`
                    x = (x0 + chain.sigma_in[target] * noise(x.shape[1:])) * chain.scale_in[target]
                    bar.update()
                    continue
                x0, eps = chain.predict(level, x)
                whole = canvas.clone()
                whole[window] = torch.where(overlap, canvas[window], x0)  # the overlap is known
                fixed = chain.consistent(whole)[window]
                fixed[..., overlap] = canvas[window][..., overlap]
                direction = eps if eta == 0 else math.sqrt(1 - eta ** 2) * eps + eta * noise(x.shape[1:])
                x = (fixed + chain.sigma_out[level] * direction) * chain.scale_out[level]
                if last:
                    whole[window] = x
                loss = (operator.A(whole) - y).flatten(1).pow(2).sum(dim=1)  # x0's fit, as in `_run`
            step = (number - 1) * per_tile + i
            x = guard.check(step, x, loss, force=last)
            if trace is not None and trace.curves:
                trace.record(chain.sigma_in[level], loss, whole)
            guard.show_loss(bar, step, loss)
            bar.update()
            if guard.all_failed:
                break
        canvas[window] = x
        known[window[1:]] = True
        if guard.all_failed:
            break
    bar.close()
    with torch.no_grad():  # across tile borders the per-tile fits disagree a little (a filter wider than the overlap)
        out = chain.consistent(torch.nan_to_num(canvas))
    dead = (~guard.alive).to(out.device).reshape(-1, 1, 1, 1)
    return torch.where(dead, torch.full_like(out, math.nan), out)  # a failed image is NaN as a whole
