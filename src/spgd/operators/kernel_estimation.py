"""The blur kernel of a blurry image given an estimate of the sharp one: the M-step of blind deblurring.

Fast Diffusion EM (Laroche et al., WACV 2024) alternates a posterior E-step on the image with the current kernel
and an M-step on the kernel: least squares of the data fit with a smoothness prior on the kernel, the kernel kept
a blur (non-negative, summing to one). Here the M-step is that problem on the kernel's size x size support
(circular convolution, so its normal equations come from the image's auto-correlation by FFT), with a
first-difference smoothness prior, solved exactly under the constraints by projected gradient onto the simplex,
and centred (its centre of mass moved to the middle pixel by whole pixels; the E-step's image absorbs the shift).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _laplacian_spectrum(height: int, width: int, like: Tensor) -> Tensor:
    lap = torch.zeros(height, width, dtype=like.dtype, device=like.device)
    lap[0, 0] = 4
    lap[0, 1] = lap[1, 0] = lap[0, -1] = lap[-1, 0] = -1
    return torch.fft.fft2(lap).abs() ** 2


def _centred_crop(full: Tensor, size: int) -> Tensor:
    """The size x size window of a circular kernel (origin at [0, 0]) around its origin."""
    half = size // 2
    return torch.roll(full, shifts=(half, half), dims=(-2, -1))[..., :size, :size]


def project_kernel(k: Tensor) -> Tensor:
    """k made a blur kernel: negative taps set to 0, then normalised to sum one (a zero kernel: the identity)."""
    k = k.clamp(min=0)
    total = k.sum(dim=(-2, -1), keepdim=True)
    identity = torch.zeros_like(k)
    identity[..., k.shape[-2] // 2, k.shape[-1] // 2] = 1
    return torch.where(total > 0, k / total.clamp(min=1e-30), identity)


def centre_kernel(k: Tensor) -> Tensor:
    """k shifted by whole pixels so that its centre of mass is within half a pixel of the middle tap."""
    size = k.shape[-1]
    grid = torch.arange(size, dtype=k.dtype, device=k.device) - size // 2
    mass = k.sum(dim=(-2, -1))
    cy, cx = (k.sum(-1) * grid).sum(-1) / mass, (k.sum(-2) * grid).sum(-1) / mass
    shift_y, shift_x = int(torch.round(-cy)), int(torch.round(-cx))
    if shift_y == 0 and shift_x == 0:
        return k
    padded = F.pad(k, (abs(shift_x),) * 2 + (abs(shift_y),) * 2)
    moved = torch.roll(padded, shifts=(shift_y, shift_x), dims=(-2, -1))
    return moved[..., abs(shift_y): abs(shift_y) + size, abs(shift_x): abs(shift_x) + size]


def blur_circular(x: Tensor, k: Tensor) -> Tensor:
    """x (N x C x H x W) convolved circularly with the centred kernel k (size x size, odd)."""
    height, width = x.shape[-2:]
    size = k.shape[-1]
    full = torch.zeros(height, width, dtype=x.dtype, device=x.device)
    full[:size, :size] = k.to(x)
    full = torch.roll(full, shifts=(-(size // 2), -(size // 2)), dims=(-2, -1))
    return torch.fft.ifft2(torch.fft.fft2(x) * torch.fft.fft2(full)).real


def project_simplex(v: Tensor) -> Tensor:
    """The Euclidean projection of a vector onto the simplex {k >= 0, sum k = 1} (sort-based, exact)."""
    u, _ = torch.sort(v, descending=True)
    cumulative = torch.cumsum(u, 0) - 1
    index = torch.arange(1, v.numel() + 1, dtype=v.dtype, device=v.device)
    rho = int(torch.nonzero(u - cumulative / index > 0)[-1])
    return (v - cumulative[rho] / (rho + 1)).clamp(min=0)


def _difference_gram(size: int, like: Tensor) -> Tensor:
    """D^T D of the horizontal and vertical first differences inside a size x size kernel (its smoothness)."""
    eye = torch.eye(size, dtype=like.dtype, device=like.device)
    d = eye[1:] - eye[:-1]  # (size - 1) x size
    dx, dy = torch.kron(eye, d), torch.kron(d, eye)
    return dx.T @ dx + dy.T @ dy


def _lag_indices(size: int, height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Row and column indices (flattened, modulo the image) of the kernel's lags -size//2..size//2."""
    half = size // 2
    lags = torch.arange(-half, half + 1, device=device)
    rows, cols = torch.meshgrid(lags, lags, indexing="ij")
    return rows.reshape(-1) % height, cols.reshape(-1) % width


def estimate_kernel(x: Tensor, y: Tensor, size: int, smoothness: float = 1e-5, iterations: int = 500,
                    boundary: str = "circular", init: Tensor | None = None, anchor: Tensor | None = None,
                    anchor_weight: float = 0.0) -> Tensor:
    """The size x size blur kernel k (odd size) minimising 1/2 ||k * x - y||^2 + smoothness/2 * s ||grad k||^2
    (convolution, one image pair C x H x W in any range; s the data term's mean curvature, so `smoothness` is
    scale-free) under k >= 0 and sum k = 1. `boundary` "circular": y wraps around, and the normal equations on
    the kernel's support (from the image's auto-correlation and the cross-correlation with y, by FFT) are solved
    by projected gradient onto the simplex with the step of the sum-zero subspace. "valid": only the pixels of y
    whose blur stays inside x are fitted, as a real photo's borders saw pixels outside the frame (or a padding
    nobody knows); from the circular solution (or `init`, a convolution kernel), accelerated projected gradient
    on that exact data term, its gradient by FFT. Returned centred (`centre_kernel`; the mass a shift moves out
    of the window is dropped and the rest renormalised). `anchor` (a convolution kernel) adds
    anchor_weight/2 * s ||k - anchor||^2: the k-step of half-quadratic splitting with a kernel prior."""
    if size % 2 != 1:
        raise ValueError(f"the kernel size must be odd, got {size}")
    if boundary not in ("circular", "valid"):
        raise ValueError(f"boundary must be circular or valid, got {boundary!r}")
    x, y = x.double(), y.double()
    height, width = x.shape[-2:]
    xf = torch.fft.fft2(x)
    auto = torch.fft.ifft2((xf.abs() ** 2).sum(0)).real  # R[d] = sum_p x[p] x[p + d]
    u, v = _lag_indices(size, height, width, x.device)
    gram = auto[(u[:, None] - u[None, :]) % height, (v[:, None] - v[None, :]) % width]
    scale = float(torch.diagonal(gram).mean())
    prior = smoothness * scale * _difference_gram(size, x)
    pull = torch.zeros(size * size, dtype=x.dtype, device=x.device)
    if anchor is not None and anchor_weight > 0:
        prior = prior + anchor_weight * scale * torch.eye(size * size, dtype=x.dtype, device=x.device)
        pull = anchor_weight * scale * anchor.double().reshape(-1).to(x.device)
    n = size * size
    centring = torch.eye(n, dtype=x.dtype, device=x.device) - 1.0 / n  # the sum-zero subspace the steps move in
    step = 1.0 / float(torch.linalg.eigvalsh(centring @ (gram + prior) @ centring)[-1])
    if boundary == "circular" or init is None:
        cross = torch.fft.ifft2((xf.conj() * torch.fft.fft2(y)).sum(0)).real  # sum_p x[p] y[p + d]
        system, rhs = gram + prior, cross[u, v] + pull
        k = project_simplex(torch.linalg.lstsq(system, rhs[:, None]).solution[:, 0])
        for _ in range(iterations if boundary == "circular" else 0):
            k = project_simplex(k - step * (system @ k - rhs))
    else:
        k = init.double().reshape(-1).to(x.device)
    if boundary == "valid":
        k = _fit_valid(xf, y, k, size, prior, pull, step, iterations)
    return project_kernel(centre_kernel(k.reshape(size, size))).float()


def _fit_valid(xf: Tensor, y: Tensor, k: Tensor, size: int, prior: Tensor, pull: Tensor, step: float,
               iterations: int) -> Tensor:
    """Accelerated projected gradient (FISTA) on 1/2 sum over y's valid pixels of (k * x - y)^2 plus
    the prior, from k; the circular Gram's step is safe, as the valid pixels' Gram is below it."""
    height, width = y.shape[-2:]
    half = size // 2
    inside = torch.zeros(height, width, dtype=y.dtype, device=y.device)
    inside[half: height - half, half: width - half] = 1
    u, v = _lag_indices(size, height, width, y.device)
    previous, momentum, t = k, k, 1.0
    for _ in range(iterations):
        full = torch.zeros(height, width, dtype=y.dtype, device=y.device)
        full[u, v] = momentum
        residual = (torch.fft.ifft2(xf * torch.fft.fft2(full)).real - y) * inside
        gradient = torch.fft.ifft2((xf.conj() * torch.fft.fft2(residual)).sum(0)).real[u, v] + prior @ momentum - pull
        k = project_simplex(momentum - step * gradient)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        momentum, previous, t = k + (t - 1) / t_next * (k - previous), k, t_next
    return k


def max_normalised_correlation(estimate: Tensor, truth: Tensor) -> float:
    """The kernel-error measure of Hu and Yang (MNC): the largest normalised cross-correlation of two 2-D maps
    over every shift, 1 for the same kernel anywhere (blind deblurring recovers a kernel up to a shift)."""
    a, b = estimate.double().reshape(1, 1, *estimate.shape[-2:]), truth.double().reshape(1, 1, *truth.shape[-2:])
    correlation = F.conv2d(F.pad(a, (b.shape[-1] - 1,) * 2 + (b.shape[-2] - 1,) * 2), b)
    return float(correlation.max() / (a.norm() * b.norm()).clamp(min=1e-30))


__all__ = ["blur_circular", "centre_kernel", "estimate_kernel", "max_normalised_correlation", "project_kernel",
           "project_simplex"]
