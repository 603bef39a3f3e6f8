"""Blur: per-channel 2-D convolution after reflection (or circular) padding, as in the published code.

The published operators pad by kernel_size//2 with reflection and apply `conv2d` (a
cross-correlation) per channel, so the output has the input's size. The kernel is one 2-D tensor
shared by the batch, or one kernel per image (B x k x k), e.g. motion kernels drawn per image.
The adjoint is exact: a transposed convolution followed by the adjoint of the padding (folding the
padded border back onto the pixels it was copied from). `boundary="circular"` wraps the image
around instead (the blur of DiffPIR's and PnP-DM's released code).

Singular value decomposition and pseudo-inverse:
- circular boundary: the FFT diagonalises the blur exactly (`svd.FourierSVD`);
- reflection padding with a separable kernel (rank one, e.g. the Gaussian): the blur is
  A(x) = Mh x Mw^T with Mh, Mw the 1-D reflect-padded correlation matrices of the kernel's two
  factors, and the SVD comes from theirs (`svd.SeparableSVD`, exact up to the float32 rounding of
  the kernel, which is rank one to ~1e-8 relative);
- reflection padding with any other kernel (motion blur): no SVD; the pseudo-inverse comes through
  the FFT under the circular-boundary approximation (exact for the circular blur, approximate
  within half a kernel of the border).
Singular values (transfer-function magnitudes) at or below `pinv_cutoff` count as null space for
the pseudo-inverse (the threshold DDRM/DDNM use for their SVD blur operators is 3e-2); `null`
removes exactly the other directions. The SVD itself keeps every singular value.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Operator
from .motion_kernel import motion_kernel
from .svd import FourierSVD, SeparableSVD, check_shape, matrix_svd

BOUNDARIES = ("reflect", "circular")
SEPARABLE_TOLERANCE = 1e-6  # a kernel is separable when its second singular value is below this times its first


def gaussian_kernel(size: int, std: float) -> Tensor:
    """The published Gaussian kernel: a centred delta filtered by scipy's gaussian_filter, normalised."""
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0
    kernel = scipy.ndimage.gaussian_filter(delta, sigma=std)
    return torch.from_numpy(kernel / kernel.sum()).to(torch.float32)


def _check_kernel(kernel: Tensor) -> Tensor:
    """Validate a k x k (shared) or B x k x k (per image) kernel with odd k."""
    if not isinstance(kernel, Tensor) or kernel.dim() not in (2, 3) or kernel.shape[-1] != kernel.shape[-2]:
        shape = tuple(kernel.shape) if isinstance(kernel, Tensor) else type(kernel).__name__
        raise ValueError(f"blur kernel must be a k x k or B x k x k tensor, got {shape}")
    if kernel.shape[-1] % 2 == 0:
        size = kernel.shape[-1]
        raise ValueError(f"blur kernel size must be odd (the output keeps the input size), got {size}")
    return kernel


def _reflect_pad_adjoint(g: Tensor, pad: int, dim: int) -> Tensor:
    """Adjoint of reflection padding by `pad` along `dim`: add each padded entry to its source."""
    n = g.shape[dim] - 2 * pad
    core = g.narrow(dim, pad, n)
    # Padded entry pad-1-m copies pixel m+1; padded entry pad+n+m copies pixel n-2-m.
    before = g.narrow(dim, 0, pad).flip(dim)
    after = g.narrow(dim, pad + n, pad).flip(dim)
    core = core.index_add(dim, torch.arange(1, pad + 1, device=g.device), before)
    return core.index_add(dim, torch.arange(n - 1 - pad, n - 1, device=g.device), after)


def _circular_pad_adjoint(g: Tensor, pad: int, dim: int) -> Tensor:
    """Adjoint of circular padding by `pad` along `dim`: add each padded entry to the pixel it wraps."""
    n = g.shape[dim] - 2 * pad
    core = g.narrow(dim, pad, n)
    # Padded entry m (m < pad) copies pixel n - pad + m; padded entry pad + n + m copies pixel m.
    core = core.index_add(dim, torch.arange(n - pad, n, device=g.device), g.narrow(dim, 0, pad))
    return core.index_add(dim, torch.arange(0, pad, device=g.device), g.narrow(dim, pad + n, pad))


def correlation_matrix(taps: Tensor, length: int) -> Tensor:
    """The length x length float64 matrix of 1-D correlation with `taps` (odd count) after reflection
    padding: (M x)_i = sum_j taps_j x_reflect(i + j - k//2)."""
    k = taps.shape[-1]
    positions = torch.arange(length)[:, None] + torch.arange(k)[None, :] - k // 2
    positions = torch.where(positions < 0, -positions, positions)
    positions = torch.where(positions > length - 1, 2 * (length - 1) - positions, positions)
    matrix = torch.zeros(*taps.shape[:-1], length, length, dtype=torch.float64)
    weights = taps.double()[..., None, :].expand(*taps.shape[:-1], length, k)
    return matrix.scatter_add_(-1, positions.expand(*taps.shape[:-1], length, k), weights)


def separable_factors(kernel: Tensor) -> tuple[Tensor, Tensor] | None:
    """(column taps, row taps) with kernel = outer(column, row) per kernel (float64, batched like the
    kernel), or None when a kernel is not rank one (to SEPARABLE_TOLERANCE)."""
    u, s, vh = torch.linalg.svd(kernel.double().cpu())
    if s.shape[-1] > 1 and bool((s[..., 1] > SEPARABLE_TOLERANCE * s[..., 0]).any()):
        return None
    scale = s[..., :1].sqrt()
    return u[..., :, 0] * scale, vh[..., 0, :] * scale


def transfer_function(kernel: Tensor, height: int, width: int) -> Tensor:
    """Complex Bx1xHxW (or 1x1xHxW) FFT multiplier of circular per-channel correlation with `kernel`."""
    kernel = kernel.double().cpu().reshape(-1, *kernel.shape[-2:])
    size = kernel.shape[-1]
    offsets = torch.arange(size) - size // 2
    rows = (offsets[:, None] % height).expand(size, size).reshape(-1)
    cols = (offsets[None, :] % width).expand(size, size).reshape(-1)
    placed = torch.zeros(kernel.shape[0], height * width, dtype=torch.float64)
    placed.index_add_(1, rows * width + cols, kernel.reshape(kernel.shape[0], -1))
    # correlation y[i] = sum_u k[u] x[i + u]: its multiplier is the conjugate of the placed kernel's FFT
    return torch.fft.fft2(placed.reshape(-1, 1, height, width)).conj()


class Blur(Operator):
    """y = pad(x) correlated per channel with `kernel` (shared 2-D or one per image); `boundary`
    "reflect" (published) or "circular"."""

    name = "blur"
    file_parameters = ("kernel",)
    linear = True
    image_measurement = True

    def __init__(self, kernel: Tensor | None = None, noise_sigma: float = 0.0, pinv_cutoff: float = 3e-2,
                 boundary: str = "reflect") -> None:
        super().__init__(noise_sigma)
        if not 0 < pinv_cutoff < 1:
            raise ValueError(f"pinv_cutoff must be in (0, 1), got {pinv_cutoff}")
        if boundary not in BOUNDARIES:
            raise ValueError(f"blur boundary must be one of {BOUNDARIES}, got {boundary!r}")
        self.pinv_cutoff = float(pinv_cutoff)
        self.boundary = boundary
        self.register_buffer("kernel", None if kernel is None else _check_kernel(kernel))
        self._transfer: tuple | None = None  # (kernel, its version, height, width, device, transfer function)
        self._separable: tuple | None = None  # (kernel, its version, factors or None)
        self._svds: tuple = (None, {})  # (kernel, {(its version, boundary, size, device, dtype): SVD})

    def _no_kernel(self) -> Exception:
        """What using the blur before its kernel is set raises."""
        return RuntimeError(f"{self.name}: no kernel set; call measure()/draw() first or pass kernel=")

    def _weights(self, x: Tensor) -> Tensor:
        """Grouped-conv weights (B*C x 1 x k x k) for the batch `x`."""
        if self.kernel is None:
            raise self._no_kernel()
        kernel = _check_kernel(self.kernel).to(device=x.device, dtype=x.dtype)
        batch, channels, height, width = x.shape
        if kernel.dim() == 3 and kernel.shape[0] not in (1, batch):
            raise ValueError(f"{self.name}: {kernel.shape[0]} per-image kernels for a batch of {batch} images")
        pad = kernel.shape[-1] // 2
        if pad >= min(height, width):
            raise ValueError(
                f"{self.name}: kernel size {kernel.shape[-1]} needs images larger than {pad} pixels "
                f"per side for {self.boundary} padding, got {height}x{width}"
            )
        kernel = kernel.reshape(-1, *kernel.shape[-2:]).expand(batch, -1, -1)
        return kernel.repeat_interleave(channels, dim=0).unsqueeze(1)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        weights = self._weights(x)
        pad = weights.shape[-1] // 2
        padded = F.pad(x, (pad, pad, pad, pad), mode=self.boundary)
        y = F.conv2d(padded.reshape(1, -1, *padded.shape[-2:]), weights, groups=weights.shape[0])
        return y.reshape(x.shape)

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        weights = self._weights(y)
        pad = weights.shape[-1] // 2
        g = F.conv_transpose2d(y.reshape(1, -1, *y.shape[-2:]), weights, groups=weights.shape[0])
        fold = _reflect_pad_adjoint if self.boundary == "reflect" else _circular_pad_adjoint
        g = fold(fold(g, pad, -2), pad, -1)
        return g.reshape(y.shape)

    def _transfer_function(self, x: Tensor) -> Tensor:
        """The circular blur's FFT multiplier at x's size, computed once per kernel and size."""
        if self.kernel is None:
            raise self._no_kernel()
        key = (self.kernel, self.kernel._version, x.shape[-2], x.shape[-1], x.device)
        if self._transfer is None or self._transfer[0] is not key[0] or self._transfer[1:5] != key[1:]:
            self._transfer = (*key, transfer_function(self.kernel, x.shape[-2], x.shape[-1]).to(x.device))
        return self._transfer[5]

    def _factors(self) -> tuple[Tensor, Tensor] | None:
        """The kernel's separable factors (see `separable_factors`), computed once per kernel."""
        if self.kernel is None:
            return None
        if self._separable is None or self._separable[0] is not self.kernel or \
                self._separable[1] != self.kernel._version:
            self._separable = (self.kernel, self.kernel._version, separable_factors(self.kernel))
        return self._separable[2]

    def has_svd(self) -> bool:
        """Circular blurs always; reflect-padded ones with a separable (rank-one) kernel."""
        return self.kernel is not None and (self.boundary == "circular" or self._factors() is not None)

    def svd_hint(self) -> str:
        if self.kernel is None:
            return " until its kernel is set"
        return (" (its reflect-padded kernel is not separable; boundary='circular' gives an exact FFT one)"
                if self.boundary == "reflect" else "")

    def svd(self, shape: Sequence[int], device: torch.device | str | None = None,
            dtype: torch.dtype = torch.float32) -> FourierSVD | SeparableSVD:
        """The blur's SVD (see the module docstring): Fourier for the circular boundary, separable else."""
        batch, _, height, width = check_shape(shape)
        if not self.has_svd():
            return super().svd(shape, device, dtype)
        kernel = _check_kernel(self.kernel)
        if kernel.dim() == 3 and kernel.shape[0] not in (1, batch):
            raise ValueError(f"{self.name}: {kernel.shape[0]} per-image kernels for a batch of {batch} images")
        device = self.kernel.device if device is None else torch.device(device)
        key = (self.kernel._version, self.boundary, height, width, device, dtype)
        if self._svds[0] is not self.kernel:
            self._svds = (self.kernel, {})
        if key in self._svds[1]:
            return self._svds[1][key]
        if self.boundary == "circular":
            svd = FourierSVD(transfer_function(kernel, height, width), device, dtype)
        else:
            columns, rows = self._factors()
            if kernel.dim() == 3:  # one factor pair per image: B x 1 x n x n matrices
                columns, rows = columns[:, None], rows[:, None]
            svd = SeparableSVD(matrix_svd(correlation_matrix(columns, height)),
                               matrix_svd(correlation_matrix(rows, width)), device, dtype)
        self._svds[1][key] = svd
        return svd

    def _separable_pinv(self, y: Tensor, null: bool) -> Tensor:
        """The truncated pseudo-inverse (or null-space projection) through the separable SVD."""
        svd = self.svd(tuple(y.shape), y.device, torch.float64)
        kept = svd.s > self.pinv_cutoff
        if null:
            return svd.V(torch.where(kept, 0.0, svd.V_adjoint(y.double()))).to(y.dtype)
        inverse = torch.where(kept, 1 / torch.where(kept, svd.s, 1.0), 0.0)
        return svd.V(inverse * svd.U_adjoint(y.double())).to(y.dtype)

    def A_pinv(self, y: Tensor) -> Tensor:  # noqa: N802
        """Truncated pseudo-inverse: exact through the SVD for circular and separable blurs, of the
        circular version of the blur otherwise (see the module docstring)."""
        if self.boundary == "reflect" and self._factors() is not None:
            return self._separable_pinv(y, null=False)
        k = self._transfer_function(y)
        kept = k.abs() > self.pinv_cutoff
        inverse = torch.where(kept, 1 / torch.where(kept, k, torch.ones_like(k)), torch.zeros_like(k))
        return torch.fft.ifft2(torch.fft.fft2(y.double()) * inverse).real.to(y.dtype)

    def null(self, x: Tensor) -> Tensor:
        """The directions (frequencies) the truncated pseudo-inverse drops."""
        if self.boundary == "reflect" and self._factors() is not None:
            return self._separable_pinv(x, null=True)
        dropped = (self._transfer_function(x).abs() <= self.pinv_cutoff).to(torch.complex128)
        return torch.fft.ifft2(torch.fft.fft2(x.double()) * dropped).real.to(x.dtype)

    def unset_parameters(self) -> list[str]:
        return ["kernel"] if self.kernel is None else []

    def params(self) -> dict[str, Any]:
        return {**super().params(), "kernel": self.kernel, "pinv_cutoff": self.pinv_cutoff, "boundary": self.boundary}


class GaussianBlur(Blur):
    """Blur with the published Gaussian kernel (size `kernel_size`, standard deviation `std`).

    A measured `kernel` (e.g. estimated from the blurry photo) replaces the Gaussian one.
    """

    name = "gaussian_blur"
    assumed_parameters = ("std", "kernel_size")  # a blurry photo does not say how wide its blur is

    def __init__(self, kernel_size: int = 61, std: float = 3.0, noise_sigma: float = 0.0,
                 pinv_cutoff: float = 3e-2, kernel: Tensor | None = None, boundary: str = "reflect") -> None:
        super().__init__(gaussian_kernel(kernel_size, std) if kernel is None else kernel, noise_sigma, pinv_cutoff,
                         boundary)
        self.kernel_size = int(kernel_size)
        self.std = float(std)
        self.measured = kernel is not None

    def update(self, **params: Any) -> Operator:
        """Change kernel_size/std/noise_sigma; the kernel follows (it cannot be set directly)."""
        if "kernel" in params:
            raise ValueError("gaussian_blur: set kernel_size/std instead of kernel (or use Blur(kernel))")
        super().update(**params)
        self.kernel = gaussian_kernel(self.kernel_size, self.std).to(self.kernel.device)
        self.measured = False
        return self

    def params(self) -> dict[str, Any]:
        params = {**Operator.params(self), "kernel_size": self.kernel_size, "std": self.std,
                  "pinv_cutoff": self.pinv_cutoff, "boundary": self.boundary}
        return {**params, "kernel": self.kernel} if self.measured else params


class MotionBlur(Blur):
    """Blur with a random motion kernel per image, drawn in `draw()` unless `kernel` is given."""

    name = "motion_blur"

    def __init__(
        self,
        kernel_size: int = 61,
        intensity: float = 0.5,
        noise_sigma: float = 0.0,
        kernel: Tensor | None = None,
        pinv_cutoff: float = 3e-2,
        boundary: str = "reflect",
    ) -> None:
        super().__init__(kernel, noise_sigma, pinv_cutoff, boundary)
        self.kernel_size = int(kernel_size)
        self.intensity = float(intensity)

    def draw(self, x: Tensor, generators: Sequence[torch.Generator | None]) -> None:
        if self.kernel is not None:
            return
        kernels = [motion_kernel(self.kernel_size, self.intensity, g) for g in generators]
        self.kernel = torch.stack(kernels).to(device=x.device, dtype=torch.float32)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "kernel_size": self.kernel_size, "intensity": self.intensity}
