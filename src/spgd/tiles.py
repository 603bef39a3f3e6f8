"""Tile geometry: where tiles of a fixed side lie on an axis, and how much each tile's output is trusted.

A leaf module (torch only): the tiled prior (`spgd.priors.tiled`) and a sampler with a tiling of its own
(DDNM's Mask-Shift) share one grid without either room importing the other.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets along one axis: every `stride` pixels, the last flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def core_window(start: int, length: int, tile: int, halo: int) -> Tensor:
    """One tile's 1D weights: a half-pixel-shifted Hann over its core, zero in the halo away from the image edge."""
    lo = 0 if start == 0 else halo
    hi = tile if start + tile >= length else tile - halo
    w = torch.zeros(tile, dtype=torch.float64)
    u = torch.arange(hi - lo, dtype=torch.float64)
    w[lo:hi] = torch.sin(math.pi * (u + 0.5) / (hi - lo)) ** 2
    return w
