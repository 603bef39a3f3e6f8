"""Inpainting: y = x * mask (1 keeps a pixel, 0 removes it in every channel).

Masks are given (a tensor, or a file via `load_mask`) or drawn per image from that image's
generator in `draw()`:
- kind="box": one rectangle removed. Its height and width are drawn independently in
  `box_size` = (min, max) pixels (an int means exactly that size) and its position uniformly so
  that it keeps `margin` pixels from every border. Defaults scale with the image: sides of half the
  image and a margin of 1/8, i.e. the published 128x128 box with margin 32 in a 256x256 image.
- kind="random": `fraction` of the pixels removed (published 0.8); a (min, max) pair draws the
  fraction uniformly per image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..io import open_image
from .base import Operator
from .svd import DiagonalSVD, check_shape

KINDS = ("box", "random")


def load_mask(path: str | Path, size: int | tuple[int, int] | None = None) -> Tensor:
    """Read a mask image (white keeps a pixel, grey level threshold 0.5) as a 1x1xHxW float tensor.

    `size` (H or (H, W)) is checked, not resized to: a mask of the wrong size is an error.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mask file not found: {path}")
    with open_image(path, "mask file") as image:  # the size cap, EXIF orientation and errors of every image
        gray = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    if size is not None:
        expected = (size, size) if isinstance(size, int) else tuple(size)
        if gray.shape != expected:
            got, want = "x".join(map(str, gray.shape[::-1])), "x".join(map(str, expected[::-1]))
            raise ValueError(f"mask file {path} is {got} pixels (WxH), expected {want}")
    return torch.from_numpy((gray >= 0.5).astype(np.float32))[None, None]


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """A uniform integer in [low, high], inclusive."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _as_pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, (int, float)) else (int(value[0]), int(value[1]))


class Inpainting(Operator):
    """y = x * mask, with a fixed mask or per-image masks drawn by `kind` ("box" or "random").

    mask: Bx1xHxW or 1x1xHxW, 1 keeps a pixel; if set, nothing is drawn.
    box_size: (min, max) side length in pixels, used for both height and width (int: exact size);
        default half the image side. margin: pixels kept clear of the border, int or
        (vertical, horizontal); default 1/8 of the side. fraction: share of pixels removed by
        kind="random", a float or a (min, max) range.
    """

    name = "inpainting"
    file_parameters = ("mask",)
    linear = True
    image_measurement = True

    def __init__(
        self,
        mask: Tensor | None = None,
        kind: str | None = None,
        noise_sigma: float = 0.0,
        box_size: int | tuple[int, int] | None = None,
        margin: int | tuple[int, int] | None = None,
        fraction: float | tuple[float, float] = 0.8,
    ) -> None:
        super().__init__(noise_sigma)
        if kind not in (None, *KINDS):
            raise ValueError(f"inpainting kind must be one of {KINDS} (or None with a mask), got {kind!r}")
        if mask is None and kind is None:
            raise ValueError("inpainting needs a mask or a kind ('box' or 'random') to draw masks")
        self.kind = kind
        self.box_size = None if box_size is None else _as_pair(box_size)
        self.margin = None if margin is None else _as_pair(margin)
        self.fraction = float(fraction) if isinstance(fraction, (int, float)) else tuple(map(float, fraction))
        bounds = self.fraction if isinstance(self.fraction, tuple) else (self.fraction, self.fraction)
        if not 0.0 <= bounds[0] <= bounds[-1] <= 1.0:
            raise ValueError(f"inpainting fraction must lie in [0, 1] (a range as (min, max)), got {fraction}")
        if self.box_size is not None and not 0 < self.box_size[0] <= self.box_size[1]:
            raise ValueError(f"inpainting box_size must be positive with min <= max, got {box_size}")
        self.register_buffer("mask", mask)
        self._unknown_only = False  # the mask holds only `mark_unknown`'s pixels: a drawn one still joins them

    def draw(self, x: Tensor, generators: Sequence[torch.Generator | None]) -> None:
        if self.mask is not None and not self._unknown_only:
            return
        if self.kind is None:
            raise RuntimeError("inpainting: no mask set and no kind to draw one from")
        height, width = x.shape[-2:]
        draw_one = self._box_mask if self.kind == "box" else self._random_mask
        drawn = torch.stack([draw_one(height, width, g) for g in generators]).to(x.device)
        self.mask = drawn if self.mask is None else drawn * self.mask.to(drawn)
        self._unknown_only = False

    def mark_unknown(self, unknown: Tensor) -> None:
        """Leave out the pixels where `unknown` (Nx1xHxW or 1x1xHxW) is true as well: they join the holes of
        the mask; without a mask they are its holes, until `draw` draws one (with the same random draws as
        without them), which joins them."""
        keep = (~unknown.bool()).float()
        if self.mask is None:
            self.mask, self._unknown_only = keep, True
        else:
            self.mask = self.mask * keep.to(self.mask)

    def _box_mask(self, height: int, width: int, generator: torch.Generator | None) -> Tensor:
        sides = [self.box_size or (n // 2, n // 2) for n in (height, width)]
        margins = self.margin or (height // 8, width // 8)
        lengths = [_randint(low, high, generator) for low, high in sides]
        starts = []
        for n, side, margin in zip((height, width), lengths, margins):
            if side > n - 2 * margin:
                raise ValueError(
                    f"inpainting box of {side} pixels does not fit in {n} pixels with a margin of {margin}"
                )
            starts.append(_randint(margin, n - margin - side, generator))
        mask = torch.ones(1, height, width)
        mask[:, starts[0] : starts[0] + lengths[0], starts[1] : starts[1] + lengths[1]] = 0
        return mask

    def _random_mask(self, height: int, width: int, generator: torch.Generator | None) -> Tensor:
        fraction = self.fraction
        if isinstance(fraction, tuple):
            low, high = fraction
            fraction = low + (high - low) * float(torch.rand((), generator=generator))
        removed = torch.randperm(height * width, generator=generator)[: int(height * width * fraction)]
        mask = torch.ones(height * width)
        mask[removed] = 0
        return mask.reshape(1, height, width)

    def _mask_for(self, x: Tensor) -> Tensor:
        if self.mask is None:
            raise RuntimeError("inpainting: no mask set; call measure()/draw() first or pass mask=")
        mask = self.mask
        fits = mask.dim() == 4 and mask.shape[1] == 1 and mask.shape[0] in (1, x.shape[0])
        if not fits or mask.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"inpainting mask of shape {tuple(mask.shape)} does not fit images of shape {tuple(x.shape)} "
                "(expected Bx1xHxW or 1x1xHxW)"
            )
        return mask.to(device=x.device, dtype=x.dtype)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return x * self._mask_for(x)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return self.A(y)

    def A_pinv(self, y: Tensor) -> Tensor:  # noqa: N802
        return self.A(y)

    def svd(self, shape: Sequence[int], device: torch.device | str | None = None,
            dtype: torch.dtype = torch.float32) -> DiagonalSVD:
        """A = diag(mask): U = V = I, the singular values are the mask (1 kept, 0 removed)."""
        self._mask_for(torch.empty(check_shape(shape), device="meta"))  # checks that the mask fits
        return DiagonalSVD(self.mask.to(device=device if device is not None else self.mask.device, dtype=dtype))

    def as_measurement(self, image: Tensor) -> Tensor:
        """A damaged photo becomes y by zeroing its unknown pixels, as `A` does."""
        return self.A(image)

    def with_measured(self, x: Tensor, y: Tensor) -> Tensor:
        """x with the known pixels (mask 1) taken from y: a measured photo's own pixels, unchanged."""
        return torch.where(self._mask_for(x) > 0.5, y.to(x.dtype), x)

    def unset_parameters(self) -> list[str]:
        return ["mask"] if self.mask is None else []

    def params(self) -> dict[str, Any]:
        return {
            **super().params(),
            "mask": self.mask,
            "kind": self.kind,
            "box_size": self.box_size,
            "margin": self.margin,
            "fraction": self.fraction,
        }
