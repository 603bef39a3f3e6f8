"""Range / null-space split of a linear operator, for null-space data consistency (DDNM, DeqIR).

x0 <- A^+ y + (I - A^+ A) x0 keeps the part of x0 that A cannot see and takes the rest from y.
Super-resolution and inpainting have an exact `A_pinv`. Blurs get one through the FFT under the
circular-boundary approximation: the operator pads by reflection, the pseudo-inverse assumes the
image wraps around, so the consistency is exact for the circular blur and approximate within half
a kernel of the border. Frequencies whose transfer-function magnitude is below `blur_cutoff`
count as null space (the threshold DDRM/DDNM use for their SVD blur operators is 3e-2).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..operators import Blur, Inpainting, SuperResolution


class NullSpace:
    """pinv(y) = A^+ y and null(x) = (I - A^+ A) x for one operator."""

    def __init__(self, pinv: Callable[[Tensor], Tensor], null: Callable[[Tensor], Tensor]) -> None:
        self.pinv, self.null = pinv, null


def null_space(operator, blur_cutoff: float = 3e-2, sampler: str = "this sampler") -> NullSpace:
    """The range/null-space split of `operator`; ValueError for operators without a pseudo-inverse."""
    if isinstance(operator, Blur):
        return _fft_blur(operator, blur_cutoff)
    if isinstance(operator, (SuperResolution, Inpainting)):
        return NullSpace(operator.A_pinv, lambda x: x - operator.A_pinv(operator.A(x)))
    raise ValueError(
        f"{sampler} needs a linear operator with a pseudo-inverse (super_resolution, inpainting, "
        f"gaussian_blur, motion_blur, blur), not {getattr(operator, 'name', type(operator).__name__)}; "
        "dps, daps, reddiff and spgd handle every task, non-linear ones included"
    )


def _fft_blur(operator: Blur, cutoff: float) -> NullSpace:
    """Truncated pseudo-inverse of the circular version of the blur (see the module docstring)."""
    if not 0 < cutoff < 1:
        raise ValueError(f"blur_cutoff must be in (0, 1), got {cutoff}")

    cache: dict[tuple, Tensor] = {}

    def transfer(x: Tensor) -> Tensor:
        key = (x.shape[-2], x.shape[-1], x.device)
        if key not in cache:
            cache[key] = transfer_function(operator.kernel, x.shape[-2], x.shape[-1]).to(x.device)
        return cache[key]

    def pinv(y: Tensor) -> Tensor:
        k = transfer(y)
        kept = k.abs() > cutoff
        inverse = torch.where(kept, 1 / torch.where(kept, k, torch.ones_like(k)), torch.zeros_like(k))
        return torch.fft.ifft2(torch.fft.fft2(y.double()) * inverse).real.to(y.dtype)

    def null(x: Tensor) -> Tensor:
        dropped = (transfer(x).abs() <= cutoff).to(torch.complex128)
        return torch.fft.ifft2(torch.fft.fft2(x.double()) * dropped).real.to(x.dtype)

    return NullSpace(pinv, null)


def transfer_function(kernel: Tensor, height: int, width: int) -> Tensor:
    """Complex Bx1xHxW (or 1x1xHxW) FFT multiplier of circular per-channel correlation with `kernel`."""
    if kernel is None:
        raise RuntimeError("blur: no kernel set; call measure()/draw() first or pass kernel=")
    kernel = kernel.double().cpu().reshape(-1, *kernel.shape[-2:])
    size = kernel.shape[-1]
    offsets = torch.arange(size) - size // 2
    rows = (offsets[:, None] % height).expand(size, size).reshape(-1)
    cols = (offsets[None, :] % width).expand(size, size).reshape(-1)
    placed = torch.zeros(kernel.shape[0], height * width, dtype=torch.float64)
    placed.index_add_(1, rows * width + cols, kernel.reshape(kernel.shape[0], -1))
    # correlation y[i] = sum_u k[u] x[i + u]: its multiplier is the conjugate of the placed kernel's FFT
    return torch.fft.fft2(placed.reshape(-1, 1, height, width)).conj()
