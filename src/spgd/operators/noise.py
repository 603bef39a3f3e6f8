"""Noise models: what is added to A(x) to make a measurement, kept apart from the physics A.

As DeepInverse separates `physics` from `noise_model`, an operator holds one of these as `noise` and its
`measure` calls it after A. Levels are in the [-1, 1] units of the published code; every draw comes from
the image's own generator, so a batch gives what one run per image gives.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ..seeding import randn_per_image

EIGHT_BIT = 127.5  # one 8-bit grey level is 1/127.5 in [-1, 1] units (255 levels span 2)


def from_8bit(sigma: float) -> float:
    """A noise level stated in 8-bit grey levels (as the denoising literature states them) in [-1, 1] units."""
    return float(sigma) / EIGHT_BIT


class GaussianNoise:
    """Additive white Gaussian noise of standard deviation `sigma` ([-1, 1] units).

    `sigma_range` (low, high): each image first draws its own level uniformly in that range from its
    generator, then its noise (pairs for training a restorer blind to the level); `sigma` is then unused
    by `__call__` but still what a sampler is told (the range's top: the worst case).
    """

    name = "gaussian"

    def __init__(self, sigma: float = 0.0, sigma_range: Sequence[float] | None = None) -> None:
        if sigma < 0:
            raise ValueError(f"noise_sigma must be >= 0, got {sigma}")
        if sigma_range is not None:
            low, high = (float(v) for v in sigma_range)
            if not 0 <= low <= high:
                raise ValueError(f"noise sigma_range must be 0 <= low <= high, got {list(sigma_range)}")
            sigma_range = (low, high)
        self.sigma = float(sigma)
        self.sigma_range = sigma_range

    def levels(self, generators: Sequence[torch.Generator | None]) -> Tensor:
        """The level of each image: `sigma`, or drawn from `sigma_range` with the image's generator."""
        if self.sigma_range is None:
            return torch.full((len(generators),), self.sigma)
        low, high = self.sigma_range
        return torch.stack([low + (high - low) * torch.rand((), generator=g) for g in generators])

    def __call__(self, z: Tensor, generators: Sequence[torch.Generator | None]) -> Tensor:
        """z plus noise, image i's level and noise drawn from generators[i]."""
        if self.sigma_range is None:
            return z + self.sigma * randn_per_image(z.shape[1:], generators, z.device, z.dtype) if self.sigma > 0 else z
        levels = self.levels(generators).to(z.device, z.dtype).view(-1, *[1] * (z.dim() - 1))
        return z + levels * randn_per_image(z.shape[1:], generators, z.device, z.dtype)

    def params(self) -> dict[str, Any]:
        return {"noise": self.name, "sigma": self.sigma, "sigma_range": self.sigma_range}
