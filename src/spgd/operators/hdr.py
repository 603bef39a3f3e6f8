"""High dynamic range: y = clip(scale * x, -1, 1), the published HDR task (scale 2). Non-linear."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from .base import Operator


class HighDynamicRange(Operator):
    """y = clip(scale * x, -1, 1): bright and dark regions saturate."""

    name = "hdr"
    image_measurement = True

    def __init__(self, scale: float = 2.0, noise_sigma: float = 0.0) -> None:
        super().__init__(noise_sigma)
        self.scale = float(scale)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return (self.scale * x).clamp(-1, 1)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "scale": self.scale}
