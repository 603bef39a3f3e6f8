"""Denoising: the identity operator, with additive white Gaussian noise as the whole degradation.

The level is stated in 8-bit grey levels (`sigma=25` is 25/255 of the range), as the denoising
literature states it, and converted to the [-1, 1] units every sampler reads (`noise_sigma`). The
identity has the trivial SVD (U = V = I, s = 1), so the spectral samplers run it as they are.
`sigma_range` draws each image's level uniformly in a range (8-bit units): pairs for a restorer trained
blind to the level.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .base import Operator
from .noise import GaussianNoise, from_8bit
from .svd import DiagonalSVD, check_shape


class Denoising(Operator):
    """y = x + n, n ~ N(0, (sigma/127.5)^2) in [-1, 1] units."""

    name = "denoising"
    linear = True
    image_measurement = True

    def __init__(self, sigma: float = 25.0, sigma_range: Sequence[float] | None = None) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"denoising: sigma must be > 0 (8-bit grey levels), got {sigma}")
        self.sigma = float(sigma)
        self.sigma_range = None if sigma_range is None else [float(v) for v in sigma_range]
        self.noise = GaussianNoise(from_8bit(sigma), None if sigma_range is None else
                                   [from_8bit(v) for v in self.sigma_range])

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return x

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return y

    def A_pinv(self, y: Tensor) -> Tensor:  # noqa: N802
        return y

    def svd(self, shape: Sequence[int], device: torch.device | str | None = None,
            dtype: torch.dtype = torch.float32) -> DiagonalSVD:
        _, _, height, width = check_shape(shape)
        return DiagonalSVD(torch.ones(1, 1, height, width, device=device, dtype=dtype))

    def params(self) -> dict[str, Any]:
        params = {"name": self.name, "sigma": self.sigma}
        if self.sigma_range is not None:
            params["sigma_range"] = list(self.sigma_range)
        return params
