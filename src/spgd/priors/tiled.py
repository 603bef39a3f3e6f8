"""A fixed-size prior as a denoiser of any H x W: overlapping tiles blended by a partition of unity.

The image is covered by tiles of the prior's size (stride `tile - overlap`, the last tile of each row and
column flush with the edge; images smaller than a tile are reflect-padded). Each tile's output is
trusted only inside its core, `halo` pixels in from every edge that is not an image edge, where a network
that sees a little context around each pixel agrees with a whole-image call; over the core a separable
Hann window (shifted by half a pixel, so it is positive everywhere in the core) is normalised to sum to
one at every pixel. So a constant-preserving tile denoiser stays constant-preserving, a one-tile image
is the prior itself, and a denoiser that is a convolution of support <= halo gives exactly its
whole-image result. Blending the x0 estimate (not a stochastic x_{t-1}) is what keeps every sampler
unchanged: they only ever see D(x, sigma). Facts and alternatives: docs/any-size.md.

Random shifts (`shift=True`, `tiling="shift"` in `spgd.restore`): the same grid laid on the image
reflect-padded into a canvas one stride larger, at an offset (dy, dx) in [0, stride); by default with a
quarter-tile overlap and a tile/16 halo, about 1.8 network passes per pixel against the half-tile blend's
four (with no overlap at all, one, but the last call's tile borders show: docs/any-size.md). The offset of
image j is drawn from a generator seeded by the image's run seed and the noise level of the call
(`for_seeds`), so the seams move at every step while D stays a deterministic function within a run (a
fixed-point sampler, or a gradient's recomputation, sees the same grid again at the same sigma) and a batch
equals its images alone.

Progress: with `progress`, a call of at least `PROGRESS_BATCHES` tile batches (a large image) shows its
own bar of tiles under the sampler's bar of steps.

Memory: tiles run `batch` at a time. Under autograd (DPS, SPGD, ...) the forward pass keeps the network
activations of tile batches until they hold `graph_budget_mib` (then at most one batch more; the budget is
per call, so a graph that holds k calls keeps up to k budgets) and keeps none of the rest. The backward pass
takes each tile batch's vector-Jacobian product with the blended output's gradient,
grad_x = sum_i P_i^T J_i^T (w_i * P_i g) (docs/any-size.md), from its kept graph or by computing the batch
again. So a gradient's memory is bounded by the budget plus a tile batch whatever the image, and only the
tiles past the budget cost an extra forward (a third of a gradient's time with the built-in priors).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from tqdm.auto import tqdm

from ..seeding import stream_seed
from ..tiles import core_window, tile_starts

PROGRESS_BATCHES = 8  # a call of this many tile batches or more shows a bar of its tiles
GRAPH_BUDGET_MIB = 2048  # network activations a gradient call keeps rather than computing their tiles again


class TiledDenoiser(nn.Module):
    """D(x, sigma) of `prior` for images of any size (tiles of the prior's side; see the module docstring).

    `overlap` (default half a tile) sets the stride; `halo` (default a tile/8) must leave every pixel in
    some tile's core (halo <= overlap / 2). `shift`: the grid moved by a random offset at each call (the
    offsets come from the run's seeds, `for_seeds`; overlap and halo default to a tile/4 and a tile/16
    there). `graph_budget_mib`: the activations a call under autograd keeps for its backward pass (0: none,
    every tile is computed again). Attributes the prior states (noise range, ladder, channels, recommended
    settings, description) pass through; `image_size` is None: any size.
    """

    def __init__(self, prior: Any, tile: int | None = None, overlap: int | None = None, halo: int | None = None,
                 batch: int = 16, progress: bool = False, shift: bool = False,
                 graph_budget_mib: float = GRAPH_BUDGET_MIB) -> None:
        super().__init__()
        tile = tile or prior.image_size
        if not tile:
            raise ValueError("the prior states no image size: give the tile size")
        self.prior, self.tile, self.shift = prior, int(tile), bool(shift)
        self.overlap = (self.tile // (4 if self.shift else 2)) if overlap is None else int(overlap)
        self.halo = (self.tile // (16 if self.shift else 8)) if halo is None else int(halo)
        if not 0 <= self.overlap < self.tile or not 0 <= 2 * self.halo <= self.overlap:
            raise ValueError(f"need 0 <= overlap < tile and 2 * halo <= overlap, got tile {self.tile}, "
                             f"overlap {self.overlap}, halo {self.halo}")
        self.batch, self.progress = int(batch), progress
        self.graph_budget = float(graph_budget_mib) * 2 ** 20  # bytes
        self.seeds: list[int] | None = None  # the run's per-image seeds (random shifts only)
        self._grids: dict[tuple[int, int], tuple[list[tuple[int, int]], Tensor]] = {}  # every step asks again

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            prior = self._modules.get("prior", self.__dict__.get("prior"))
            if prior is None:
                raise
            return getattr(prior, name)

    @property
    def image_size(self) -> None:
        return None

    @property
    def tile_denoiser(self) -> tuple[Any, int]:
        """(the fixed-size prior, its side): for a sampler that tiles in its own way (DDNM's Mask-Shift)."""
        return self.prior, self.tile

    @property
    def description(self) -> str:
        tiles = f"{'random-shift ' if self.shift else ''}tiles, overlap {self.overlap}, halo {self.halo}"
        return f"{getattr(self.prior, 'description', type(self.prior).__name__)}; any size: {self.tile}x{self.tile} {tiles}"

    def for_seeds(self, seeds: Sequence[int]) -> TiledDenoiser:
        """This denoiser for a run of images with these seeds (image j of a call uses seeds[j % len(seeds)], so
        a call on steps x images stacked step-major, as DeqIR makes, works too); itself when it draws nothing."""
        if not self.shift:
            return self
        seeded = copy.copy(self)
        seeded.seeds = [int(s) for s in seeds]
        return seeded

    def offsets(self, sigma: Tensor, height: int, width: int) -> list[tuple[int, int]]:
        """(dy, dx) of each image of a call, in [0, stride): drawn from its seed and its sigma, 0 along a side of
        at most a tile."""
        if self.seeds is None:
            raise ValueError("random-shift tiles draw their offsets from the run's seeds: call for_seeds(seeds) "
                             "first (spgd.restore does)")
        if sigma.numel() % len(self.seeds):
            raise ValueError(f"a call on {sigma.numel()} images with {len(self.seeds)} seeds")
        shifts = []
        for j, level in enumerate(sigma.tolist()):
            g = torch.Generator().manual_seed(stream_seed(self.seeds[j % len(self.seeds)], f"tile-offset:{level:.9g}"))
            dy, dx = torch.randint(0, self.tile - self.overlap, (2,), generator=g).tolist()
            shifts.append((dy if height > self.tile else 0, dx if width > self.tile else 0))
        return shifts

    def grid(self, height: int, width: int) -> tuple[list[tuple[int, int]], Tensor]:
        """Tile offsets (top, left) and their blending weights (tiles x tile x tile, summing to 1 per pixel)."""
        if (height, width) in self._grids:
            return self._grids[height, width]
        stride = self.tile - self.overlap
        rows, cols = tile_starts(height, self.tile, stride), tile_starts(width, self.tile, stride)
        spots = [(t, l) for t in rows for l in cols]
        windows = torch.stack([core_window(t, height, self.tile, self.halo)[:, None]
                               * core_window(l, width, self.tile, self.halo)[None, :] for t, l in spots])
        total = torch.zeros(height, width, dtype=torch.float64)
        for (t, l), w in zip(spots, windows):
            total[t:t + self.tile, l:l + self.tile] += w
        weights = torch.stack([w / total[t:t + self.tile, l:l + self.tile] for (t, l), w in zip(spots, windows)])
        self._grids[height, width] = spots, weights
        return spots, weights

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        n, _, height, width = x.shape
        if (height, width) == (self.tile, self.tile):
            return self.prior.denoise(x, sigma)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(n).contiguous()
        if self.shift:
            return self._denoise_shifted(x, sigma)
        padded = _pad_to(x, self.tile)
        spots, weights = self.grid(padded.shape[-2], padded.shape[-1])
        jobs = [(i, t, l, k) for i in range(n) for k, (t, l) in enumerate(spots)]
        out = _TiledCall.apply(padded, sigma, self, jobs, weights.to(x.device, x.dtype), self._budget(padded))
        return out[..., :height, :width]

    def _budget(self, x: Tensor) -> float:
        """The bytes of graphs a call may keep: none where no gradient can follow (`Function.forward` sees only
        whether x requires grad, not whether grad mode is on)."""
        return self.graph_budget if torch.is_grad_enabled() and x.requires_grad else 0.0

    def _denoise_shifted(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Each image reflect-padded into a canvas `stride` larger than it at its offset, the blend's grid on the
        canvas; only tiles that hold image pixels run."""
        _, _, height, width = x.shape
        stride = self.tile - self.overlap
        canvas_h, canvas_w = (side + stride if side > self.tile else self.tile for side in (height, width))
        spots, weights = self.grid(canvas_h, canvas_w)
        shifts = self.offsets(sigma, height, width)
        padded = torch.cat([_pad_sides(x[i:i + 1], dy, canvas_h - height - dy, dx, canvas_w - width - dx)
                            for i, (dy, dx) in enumerate(shifts)])
        jobs = [(i, t, l, k) for i, (dy, dx) in enumerate(shifts) for k, (t, l) in enumerate(spots)
                if t < dy + height and t + self.tile > dy and l < dx + width and l + self.tile > dx]
        out = _TiledCall.apply(padded, sigma, self, jobs, weights.to(x.device, x.dtype), self._budget(padded))
        return torch.cat([out[i:i + 1, :, dy:dy + height, dx:dx + width] for i, (dy, dx) in enumerate(shifts)])

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        return self.denoise(x, sigma)

    def tile_batches(self, x: Tensor, sigma: Tensor, jobs: list[tuple[int, int, int, int]]
                     ) -> Iterator[tuple[list[tuple[int, int, int, int]], Tensor, Tensor]]:
        """Up to `batch` of the (image, top, left, weight index) jobs at a time, their tiles and sigmas."""
        shown = self.progress and math.ceil(len(jobs) / self.batch) >= PROGRESS_BATCHES
        for k in tqdm(range(0, len(jobs), self.batch), desc=f"{len(jobs)} tiles", unit="batch", leave=False,
                      disable=not shown):
            part = jobs[k:k + self.batch]
            tiles = torch.stack([x[i, :, t:t + self.tile, l:l + self.tile] for i, t, l, _ in part])
            yield part, tiles, sigma[[i for i, *_ in part]]


TILINGS = ("blend", "shift")  # spgd.restore's `tiling`: blended overlapping tiles, or random-shift tiles


def check_tiling(tiling: str) -> None:
    """A ValueError unless `tiling` is one of TILINGS."""
    if tiling not in TILINGS:
        raise ValueError(f"tiling must be one of {', '.join(TILINGS)}, got {tiling!r}")


def for_size(prior: Any, shape: tuple[int, int], progress: bool = False, tiling: str = "blend") -> Any:
    """`prior` for images of `shape` (H, W): itself at its native size, when it states none, or when it is no
    denoiser (a trained restorer such as DiffIR takes any size itself), else tiled (`tiling`: "blend" or
    "shift"; `progress`: a bar of tiles on large images)."""
    check_tiling(tiling)
    size = prior.image_size
    if size is None or tuple(shape) == (size, size) or not hasattr(prior, "denoise"):
        return prior
    return TiledDenoiser(prior, progress=progress, shift=tiling == "shift")


def _pad_to(x: Tensor, tile: int) -> Tensor:
    """x reflect-padded (replicate where reflection cannot reach) on the bottom/right to at least tile x tile."""
    return _pad_sides(x, 0, max(0, tile - x.shape[-2]), 0, max(0, tile - x.shape[-1]))


def _pad_sides(x: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
    """x reflect-padded by these amounts (replicate where reflection cannot reach)."""
    if not (top or bottom or left or right):
        return x
    mode = "reflect" if max(top, bottom) < x.shape[-2] and max(left, right) < x.shape[-1] else "replicate"
    return nn.functional.pad(x, (left, right, top, bottom), mode=mode)


class _TiledCall(torch.autograd.Function):
    """The blended tile outputs; backward takes a per-tile VJP from the tile batches' kept graphs, computing
    again the batches forward did not keep."""

    @staticmethod
    def forward(ctx, x: Tensor, sigma: Tensor, tiled: TiledDenoiser, jobs: list, weights: Tensor,
                budget: float) -> Tensor:
        ctx.save_for_backward(x, sigma, weights)
        ctx.tiled, ctx.kept, kept_bytes = tiled, [], 0.0
        out = torch.zeros_like(x)
        for part, tiles, sig in tiled.tile_batches(x, sigma, jobs):
            if kept_bytes < budget:
                saved = _SavedBytes()
                with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(saved, lambda t: t):
                    tiles.requires_grad_(True)
                    result = tiled.prior.denoise(tiles, sig)
                kept_bytes += saved.total
                ctx.kept.append((part, tiles, result))
            else:
                with torch.no_grad():
                    result = tiled.prior.denoise(tiles, sig)
            for (i, t, l, k), r in zip(part, result.detach().to(x.dtype)):
                out[i, :, t:t + tiled.tile, l:l + tiled.tile] += weights[k] * r
        ctx.jobs, ctx.rest = jobs, jobs[sum(len(part) for part, *_ in ctx.kept):]  # the rest: computed again
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        if not ctx.needs_input_grad[0]:  # only sigma asked for: its gradient is not computed
            return None, None, None, None, None, None
        x, sigma, weights = ctx.saved_tensors
        tiled, size = ctx.tiled, ctx.tiled.tile
        grad_x = torch.zeros_like(x)

        def add_vjp(part: list, tiles: Tensor, result: Tensor) -> None:
            seed = torch.stack([weights[k] * grad_out[i, :, t:t + size, l:l + size] for i, t, l, k in part])
            (grad_tiles,) = torch.autograd.grad(result, tiles, seed.to(result.dtype))
            for (i, t, l, _), g in zip(part, grad_tiles):
                grad_x[i, :, t:t + size, l:l + size] += g

        # a kept graph serves one backward pass and is freed by it; a repeated one (retain_graph, as DeqIR's
        # implicit gradient makes) computes every tile again
        kept, ctx.kept = ctx.kept, None
        for part, tiles, result in kept or []:
            add_vjp(part, tiles, result)
        for part, tiles, sig in tiled.tile_batches(x.detach(), sigma, ctx.rest if kept is not None else ctx.jobs):
            with torch.enable_grad():
                tiles = tiles.requires_grad_(True)
                add_vjp(part, tiles, tiled.prior.denoise(tiles, sig))
        return grad_x, None, None, None, None, None


class _SavedBytes:
    """A pack hook for `saved_tensors_hooks` that adds up the bytes autograd saves. An estimate: a tensor saved
    by two operations, or a weight saved by every batch, counts each time; a saved view counts its own size,
    not its base's. It packs a detached alias: returning the tensor itself would tie an operation's saved
    output to its own graph in a cycle that only a backward pass breaks, so a graph dropped unused would leak."""

    def __init__(self) -> None:
        self.total = 0

    def __call__(self, tensor: Tensor) -> Tensor:
        self.total += tensor.numel() * tensor.element_size()
        return tensor.detach()
