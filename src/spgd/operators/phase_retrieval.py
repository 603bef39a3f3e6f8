"""Phase retrieval: Fourier magnitudes of the oversampled image, as in the published code.

x' = (x + 1)/2 is zero-padded by int(oversample/8 * size) on each side (height and width each use
their own size), then y = |fftshift(FFT2(x'))| with the orthonormal FFT. Non-linear.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Operator


class PhaseRetrieval(Operator):
    """y = magnitude of the centred orthonormal 2-D FFT of the zero-padded image in [0, 1]."""

    name = "phase_retrieval"

    def __init__(self, oversample: float = 2.0, noise_sigma: float = 0.0) -> None:
        super().__init__(noise_sigma)
        if oversample < 0:
            raise ValueError(f"oversample must be >= 0, got {oversample}")
        self.oversample = float(oversample)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        pad_h = int(self.oversample / 8 * x.shape[-2])
        pad_w = int(self.oversample / 8 * x.shape[-1])
        padded = F.pad((x + 1) / 2, (pad_w, pad_w, pad_h, pad_h))
        spectrum = torch.fft.fft2(padded, norm="ortho")
        return torch.fft.fftshift(spectrum, dim=(-2, -1)).abs()

    def _unpadded(self, length: int) -> int:
        """The image side whose padded side is `length` (the padding rounds down, so search)."""
        for side in range(length, 0, -1):
            if side + 2 * int(self.oversample / 8 * side) == length:
                return side
        raise ValueError(f"phase_retrieval: no image size gives a {length}-pixel measurement at oversample {self.oversample}")

    def input_shape(self, y: Tensor) -> tuple[int, ...]:
        return (*y.shape[:-2], self._unpadded(y.shape[-2]), self._unpadded(y.shape[-1]))

    def measurement_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        height, width = image_shape[-2:]
        return (*image_shape[:-2], height + 2 * int(self.oversample / 8 * height),
                width + 2 * int(self.oversample / 8 * width))

    def preview(self, y: Tensor) -> Tensor:
        """Log-magnitudes, scaled to [0, 1] per image (the raw magnitudes are mostly near zero)."""
        magnitude = torch.log1p(y.clamp_min(0))
        return magnitude / magnitude.flatten(1).amax(dim=1).clamp_min(1e-12).reshape(-1, 1, 1, 1)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "oversample": self.oversample}
