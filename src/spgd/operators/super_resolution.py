"""Super-resolution: antialiased bicubic downsampling (or block averaging), as a separable linear map.

The published code downsamples with the MATLAB-`imresize`-style "Resizer" of DPS/DAPS: cubic
kernel (a = -0.5) widened by the scale factor for antialiasing, weights normalised to sum to one
per output pixel, and mirror (symmetric, edge-repeating) boundary handling. Here the same weights
are assembled into one small matrix per image axis, so A(x) = Mh x Mw^T, its adjoint is the exact
transpose and a least-squares pseudo-inverse comes from the pseudo-inverses of Mh and Mw.
`filter="average"` averages each scale x scale block instead (DDRM/DDNM's "sr_averagepooling",
PnP-DM's SR): one singular value 1/scale per axis and block. Either way the SVD of A comes from
the SVDs of Mh and Mw (`svd`).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Sequence

import torch
from torch import Tensor

from .base import Operator
from .svd import SeparableSVD, check_shape, matrix_svd


def _cubic(t: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (support [-2, 2])."""
    t = t.abs()
    near = (1.5 * t**3 - 2.5 * t**2 + 1) * (t <= 1)
    far = (-0.5 * t**3 + 2.5 * t**2 - 4 * t + 2) * ((t > 1) & (t <= 2))
    return near + far


@lru_cache(maxsize=32)
def _resize_matrix_f64(in_length: int, scale: int) -> Tensor:
    """The (in_length/scale x in_length) float64 matrix that downsamples one axis by `scale`."""
    out_length = in_length // scale
    # Centre of output pixel o (1-based) in 1-based input coordinates.
    centres = (torch.arange(1, out_length + 1, dtype=torch.float64) - 0.5) * scale + 0.5
    half_width = 2.0 * scale  # the cubic's support, widened by the scale factor
    first = torch.floor(centres - half_width) - 1
    taps = int(math.ceil(2 * half_width)) + 3
    positions = first[:, None] + torch.arange(taps, dtype=torch.float64)  # 1-based input positions
    weights = _cubic((centres[:, None] - positions) / scale)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # Mirror boundary: ... 1 0 | 0 1 ... n-1 | n-1 n-2 ... (period 2n).
    index = (positions.long() - 1) % (2 * in_length)
    index = torch.where(index >= in_length, 2 * in_length - 1 - index, index)
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    matrix.scatter_add_(1, index, weights)
    return matrix


@lru_cache(maxsize=32)
def _average_matrix_f64(in_length: int, scale: int) -> Tensor:
    """The (in_length/scale x in_length) float64 matrix that averages blocks of `scale` along one axis."""
    out_length = in_length // scale
    return torch.kron(torch.eye(out_length, dtype=torch.float64), torch.full((1, scale), 1 / scale,
                                                                             dtype=torch.float64))


FILTERS = {"bicubic": _resize_matrix_f64, "average": _average_matrix_f64}


@lru_cache(maxsize=64)
def _resize_matrix(in_length: int, scale: int, device: torch.device, dtype: torch.dtype,
                   kind: str = "bicubic") -> Tensor:
    return FILTERS[kind](in_length, scale).to(device=device, dtype=dtype)


@lru_cache(maxsize=64)
def _resize_pinv(in_length: int, scale: int, device: torch.device, dtype: torch.dtype,
                 kind: str = "bicubic") -> Tensor:
    return torch.linalg.pinv(FILTERS[kind](in_length, scale)).to(device=device, dtype=dtype)


@lru_cache(maxsize=32)
def _resize_svd(in_length: int, scale: int, kind: str) -> tuple[Tensor, Tensor, Tensor]:
    return matrix_svd(FILTERS[kind](in_length, scale))


class SuperResolution(Operator):
    """y = downsampling of x by an integer `scale` (published SR task: 4) with `filter` "bicubic"
    (antialiased, the default) or "average" (block means)."""

    name = "super_resolution"
    linear = True
    image_measurement = True

    def __init__(self, scale: int = 4, noise_sigma: float = 0.0, filter: str = "bicubic") -> None:  # noqa: A002
        super().__init__(noise_sigma)
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        if filter not in FILTERS:
            raise ValueError(f"super_resolution filter must be one of {sorted(FILTERS)}, got {filter!r}")
        self.scale = int(scale)
        self.filter = filter

    def _matrices(self, height: int, width: int, like: Tensor, pinv: bool = False) -> tuple[Tensor, Tensor]:
        if height % self.scale or width % self.scale:
            raise ValueError(
                f"super_resolution: image size {height}x{width} is not divisible by the scale {self.scale}"
            )
        build = _resize_pinv if pinv else _resize_matrix
        return (build(height, self.scale, like.device, like.dtype, self.filter),
                build(width, self.scale, like.device, like.dtype, self.filter))

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        rows, cols = self._matrices(x.shape[-2], x.shape[-1], x)
        return rows @ x @ cols.T

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        rows, cols = self._matrices(y.shape[-2] * self.scale, y.shape[-1] * self.scale, y)
        return rows.T @ y @ cols

    def A_pinv(self, y: Tensor) -> Tensor:  # noqa: N802
        """The minimum-norm least-squares solution of A(x) = y."""
        rows, cols = self._matrices(y.shape[-2] * self.scale, y.shape[-1] * self.scale, y, pinv=True)
        return rows @ y @ cols.T

    def svd(self, shape: Sequence[int], device: torch.device | str | None = None,
            dtype: torch.dtype = torch.float32) -> SeparableSVD:
        """A(x) = Mh x Mw^T: the SVD from those of Mh and Mw (singular values s_j s_k)."""
        height, width = check_shape(shape)[-2:]
        self.measurement_shape(shape)  # checks divisibility
        return SeparableSVD(_resize_svd(height, self.scale, self.filter), _resize_svd(width, self.scale, self.filter),
                            device, dtype)

    def input_shape(self, y: Tensor) -> tuple[int, ...]:
        return (*y.shape[:-2], y.shape[-2] * self.scale, y.shape[-1] * self.scale)

    def measurement_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        height, width = image_shape[-2:]
        if height % self.scale or width % self.scale:
            raise ValueError(f"super_resolution: image size {width}x{height} (WxH) is not divisible "
                             f"by the scale {self.scale}")
        return (*image_shape[:-2], height // self.scale, width // self.scale)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "scale": self.scale, "filter": self.filter}
