"""Denoising: the identity operator, with additive white Gaussian noise as the whole degradation.

The level is stated in 8-bit grey levels (`sigma=25` is 25/255 of the range), as the denoising
literature states it, and converted to the [-1, 1] units every sampler reads (`noise_sigma`). Left unset
(`sigma=None`), it is estimated from the measurement (`fit_to_measurement`: Chen et al.'s patch-PCA
estimate, `spgd.operators.noise_level`), as a real noisy photo needs. The identity has the trivial SVD
(U = V = I, s = 1), so the spectral samplers run it as they are. `sigma_range` draws each image's level
uniformly in a range (8-bit units): pairs for a restorer trained blind to the level.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .base import Operator
from .noise import GaussianNoise, from_8bit
from .noise_level import estimate_noise_level
from .svd import DiagonalSVD, check_shape


class Denoising(Operator):
    """y = x + n, n ~ N(0, (sigma/127.5)^2) in [-1, 1] units."""

    name = "denoising"
    linear = True
    image_measurement = True
    measured_parameters = ("sigma",)

    def __init__(self, sigma: float | None = None, sigma_range: Sequence[float] | None = None) -> None:
        super().__init__()
        if sigma is not None and sigma <= 0:
            raise ValueError(f"denoising: sigma must be > 0 (8-bit grey levels), got {sigma}")
        self.sigma = None if sigma is None else float(sigma)
        self.sigma_range = None if sigma_range is None else [float(v) for v in sigma_range]
        self.noise = GaussianNoise(from_8bit(sigma or 0.0), None if sigma_range is None else
                                   [from_8bit(v) for v in self.sigma_range])

    def draw(self, x: Tensor, generators: Sequence[torch.Generator | None]) -> None:
        if self.sigma is None and self.sigma_range is None:
            raise ValueError("denoising: give the noise level to simulate, in 8-bit grey levels (--op sigma=25)")

    def fit_to_measurement(self, y: Tensor, files: Sequence[Any] | None = None) -> dict[str, Any]:
        """With no level given, the mean of the images' estimated levels (a gray image's from one channel)."""
        if self.sigma is not None:
            return {}
        levels = [estimate_noise_level((image[:1] if bool((image == image[:1]).all()) else image).cpu() / 2 + 0.5)
                  for image in y]
        self.sigma = round(sum(levels) / len(levels), 2)
        self.noise = GaussianNoise(from_8bit(self.sigma))
        return {"sigma": self.sigma, "estimated_by": "patch_pca (Chen et al. 2015)"}

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
        params: dict[str, Any] = {"name": self.name, "sigma": self.sigma}
        if self.sigma_range is not None:
            params["sigma_range"] = list(self.sigma_range)
        return params
