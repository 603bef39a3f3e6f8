"""The level of additive white Gaussian noise in an image, estimated from the image alone.

Two estimators, both in 8-bit grey levels (the denoising literature's units):
- `patch_pca` (Chen, Zhu & Heng, ICCV 2015): clean patches lie near a low-dimensional subspace, so the smallest
  eigenvalues of the patch covariance are the noise variance. Of the covariance of all 8x8xC patches, the
  largest eigenvalue dropped, take the largest set of the smallest eigenvalues whose mean has as many of them
  above it as below (the mean equals the median); sigma is the square root of that mean. The published stride
  is 3; too few patches for their dimension d spread the sample eigenvalues (Marchenko-Pastur) and the estimate
  falls (measured: 12 for 25 at 64x64), so the stride shrinks until there are 40 d patches (1 at the least),
  and below 10 d at stride 1 the patches shrink to 4x4 (48x48: within 5% at 5-50, where 8x8 stride 3 gives 2).
- `wavelet_mad` (Donoho & Johnstone 1994): the median absolute finest diagonal wavelet detail (Haar here) over
  0.6745, per channel, averaged. Texture leaks into the detail band, so it overestimates on textured images
  and at low levels.
`estimate_noise_level` uses the one measured better on training images (BENCHMARKS.md, "Noise-level
estimation"; `bench/noise_levels.py`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

PATCH, STRIDES = 8, (3, 2, 1)  # the published patch side and stride, then denser strides for smaller images
PATCHES_PER_DIMENSION, FEWEST_PER_DIMENSION = 40, 10
MAD_TO_SIGMA = 0.6745  # the median of |N(0, 1)|


def _to_8bit(image: Tensor) -> Tensor:
    """A CxHxW image in [0, 1] as float64 grey levels 0..255."""
    if image.dim() != 3:
        raise ValueError(f"a noise level is estimated from one CxHxW image, got shape {tuple(image.shape)}")
    return image.double() * 255


def _patch_grid(channels: int, height: int, width: int) -> tuple[int, int]:
    """(patch side, stride) for an image of this size (module docstring)."""
    def count(patch: int, stride: int) -> int:
        return ((height - patch) // stride + 1) * ((width - patch) // stride + 1)

    for stride in STRIDES:
        if count(PATCH, stride) >= PATCHES_PER_DIMENSION * channels * PATCH ** 2:
            return PATCH, stride
    return (PATCH, 1) if count(PATCH, 1) >= FEWEST_PER_DIMENSION * channels * PATCH ** 2 else (PATCH // 2, 1)


def patch_pca(image: Tensor) -> float:
    """Chen et al. 2015's estimate (module docstring) of a CxHxW image in [0, 1], in 8-bit levels."""
    x = _to_8bit(image)
    if min(x.shape[-2:]) < PATCH:
        raise ValueError(f"an image of {x.shape[-1]}x{x.shape[-2]} pixels is too small to estimate its noise "
                         f"(at least {PATCH}x{PATCH})")
    patch, stride = _patch_grid(*x.shape)
    patches = x.unfold(1, patch, stride).unfold(2, patch, stride).permute(1, 2, 0, 3, 4).reshape(-1, x.shape[0] * patch ** 2)
    patches = patches - patches.mean(dim=0)
    eigenvalues = torch.linalg.eigvalsh(patches.T @ patches / max(1, patches.shape[0] - 1))[:-1].clamp_min(0)
    for count in range(len(eigenvalues), 0, -1):
        smallest = eigenvalues[:count]
        tau = smallest.mean()
        if int((smallest > tau).sum()) == int((smallest < tau).sum()):
            return math.sqrt(float(tau))
    return math.sqrt(float(eigenvalues[0]))


def wavelet_mad(image: Tensor) -> float:
    """Donoho-Johnstone's estimate from the finest Haar diagonal details, per channel, averaged; 8-bit levels."""
    x = _to_8bit(image)
    x = x[:, : x.shape[1] // 2 * 2, : x.shape[2] // 2 * 2]
    diagonal = (x[:, 0::2, 0::2] - x[:, 0::2, 1::2] - x[:, 1::2, 0::2] + x[:, 1::2, 1::2]) / 2
    return float(torch.stack([d.abs().median() for d in diagonal.flatten(1)]).mean()) / MAD_TO_SIGMA


ESTIMATORS = {"patch_pca": patch_pca, "wavelet_mad": wavelet_mad}


def estimate_noise_level(image: Tensor, method: str = "patch_pca") -> float:
    """The Gaussian noise level of a CxHxW image in [0, 1], in 8-bit grey levels."""
    if method not in ESTIMATORS:
        raise ValueError(f"unknown noise estimator {method!r}; estimators: {', '.join(ESTIMATORS)}")
    return ESTIMATORS[method](image)
