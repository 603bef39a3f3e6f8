"""Random camera-shake motion-blur kernels, reproducible through a torch.Generator.

The published motion-deblur task (DPS, DAPS, SPGD) draws its kernels with the `motionblur` package
(LeviBorodenko, `Kernel(size, intensity)`). This module follows the same recipe and distributions:
on a canvas twice the kernel size (diagonal D), a trajectory of total length
0.75 D (U(0,1) + U(0, intensity^2)) made of steps of length Beta(1, 30) (1 - intensity + 0.1) D;
step directions lie within a maximum angle U(0, intensity pi), with magnitudes
Triangular(0, intensity * max_angle, max_angle + 0.1) and a sign that flips with a per-kernel
probability Beta(2, 20); the path is centred on its mean, rotated by U(0, pi), drawn, blurred with a
Gaussian of standard deviation int(0.01 D), shrunk to size x size and normalised.

It differs where the published one breaks: every draw comes from `generator`, the trajectory is
rasterised with antialiasing (bilinear splatting of densely sampled points, saturating like a
painted line) and shrunk by exact 2x2 averaging so the kernel stays centred, and each draw is
validated (finite, non-negative, non-zero) and redrawn if it fails; the published generator
returns NaN kernels for sizes below about 61.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

_EPS = 0.1  # the published generator's additive constant in step lengths and angles
_MAX_TRIES = 100  # kernel draws before giving up
_STEP_BATCH = 256  # candidate steps drawn at once
_MAX_STEP_BATCHES = 64  # bound on step batches per trajectory (typically one or two are used)
_SAMPLE_SPACING = 0.25  # canvas pixels between points sampled along the trajectory


def motion_kernel(size: int, intensity: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A size x size float32 motion-blur kernel (non-negative, sums to 1) of the given intensity in [0, 1].

    Raises ValueError for invalid arguments, or if no valid kernel came out of a bounded number of draws.
    """
    if int(size) != size or size < 1:
        raise ValueError(f"motion kernel size must be a positive integer, got {size}")
    if not 0.0 <= intensity <= 1.0:
        raise ValueError(f"motion kernel intensity must be in [0, 1], got {intensity}")
    size = int(size)
    for _ in range(_MAX_TRIES):
        kernel = _draw(size, float(intensity), generator)
        if kernel is not None:
            return torch.from_numpy(kernel)
    raise ValueError(
        f"could not draw a valid {size}x{size} motion kernel of intensity {intensity} in {_MAX_TRIES} tries"
    )


def _rand(generator: torch.Generator | None, n: int) -> np.ndarray:
    """n uniform draws in [0, 1) from `generator`, as float64."""
    return torch.rand(n, generator=generator, dtype=torch.float64).numpy()


def _steps(max_length: float, scale: float, generator: torch.Generator | None) -> np.ndarray | None:
    """Step lengths scale * Beta(1, 30), keeping those below max_length, until they add up to max_length."""
    if max_length <= 0:
        return None
    kept: list[np.ndarray] = []
    total = 0.0
    for _ in range(_MAX_STEP_BATCHES):
        candidates = scale * (1.0 - (1.0 - _rand(generator, _STEP_BATCH)) ** (1.0 / 30.0))
        candidates = candidates[candidates < max_length]
        reach = total + np.cumsum(candidates)
        done = np.searchsorted(reach, max_length, side="left")
        if done < len(candidates):
            kept.append(candidates[: done + 1])
            return np.concatenate(kept)
        kept.append(candidates)
        total = float(reach[-1]) if len(reach) else total
    return None


def _angles(count: int, intensity: float, generator: torch.Generator | None) -> np.ndarray:
    """Step directions: the first U(-a, a), then triangular magnitudes whose sign flips with probability Beta(2, 20)."""
    max_angle = _rand(generator, 1)[0] * intensity * math.pi
    jitter = np.sort(_rand(generator, 21))[1]  # second smallest of 21 uniforms ~ Beta(2, 20)
    first = (2.0 * _rand(generator, 1)[0] - 1.0) * max_angle
    # Triangular(0, mode, upper) by inverting its CDF.
    mode, upper = intensity * max_angle, max_angle + _EPS
    u = _rand(generator, count - 1)
    rising = u < mode / upper
    magnitudes = np.where(
        rising,
        np.sqrt(u * upper * mode),
        upper - np.sqrt((1.0 - u) * upper * (upper - mode)),
    )
    flips = np.where(_rand(generator, count - 1) < jitter, -1.0, 1.0)
    signs = np.sign(first) * np.cumprod(flips)
    return np.concatenate([[first], magnitudes * signs])


def _trajectory(size: int, intensity: float, generator: torch.Generator | None) -> np.ndarray | None:
    """Vertices (complex, canvas pixel coordinates) of a random camera-shake path on a 2*size canvas."""
    canvas = 2 * size
    diagonal = math.sqrt(2.0) * canvas
    u = _rand(generator, 2)
    max_length = 0.75 * diagonal * (u[0] + u[1] * intensity**2)
    steps = _steps(max_length, (1.0 - intensity + _EPS) * diagonal, generator)
    if steps is None:
        return None
    angles = _angles(len(steps), intensity, generator)
    vertices = np.concatenate([[0j], np.cumsum(steps * np.exp(1j * angles))])
    rotation = np.exp(1j * math.pi * _rand(generator, 1)[0])
    centre = (canvas - 1) / 2.0  # pixel centres sit at integer coordinates
    return (vertices - vertices.mean()) * rotation + complex(centre, centre)


def _rasterise(vertices: np.ndarray, canvas: int) -> np.ndarray:
    """Antialiased drawing of the polyline: dense points splatted bilinearly, coverage capped at 1 per pixel."""
    starts, ends = vertices[:-1], vertices[1:]
    lengths = np.abs(ends - starts)
    counts = np.maximum(1, np.ceil(lengths / _SAMPLE_SPACING)).astype(np.int64)
    segment = np.repeat(np.arange(len(lengths)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    fraction = (offsets + 0.5) / counts[segment]
    points = starts[segment] + fraction * (ends[segment] - starts[segment])
    weights = lengths[segment] / counts[segment]

    x0, y0 = np.floor(points.real), np.floor(points.imag)
    fx, fy = points.real - x0, points.imag - y0
    image = np.zeros(canvas * canvas)
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        col, row = x0 + dx, y0 + dy
        inside = (col >= 0) & (col < canvas) & (row >= 0) & (row < canvas)
        index = (row[inside] * canvas + col[inside]).astype(np.int64)
        image += np.bincount(index, weights=(weights * w)[inside], minlength=canvas * canvas)
    return np.minimum(image.reshape(canvas, canvas), 1.0)


def _draw(size: int, intensity: float, generator: torch.Generator | None) -> np.ndarray | None:
    """One normalised kernel, or None when the draw is degenerate (empty, non-finite)."""
    vertices = _trajectory(size, intensity, generator)
    if vertices is None:
        return None
    canvas = 2 * size
    image = _rasterise(vertices, canvas)
    sigma = int(0.01 * math.sqrt(2.0) * canvas)
    if sigma >= 1:
        image = gaussian_filter(image, sigma, mode="constant")
    kernel = image.reshape(size, 2, size, 2).mean(axis=(1, 3))
    total = kernel.sum()
    if not (np.isfinite(kernel).all() and kernel.min() >= 0 and total > 0):
        return None
    return (kernel / total).astype(np.float32)
