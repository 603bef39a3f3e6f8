"""Real-world low-resolution images: Real-ESRGAN's second-order degradation, as a seeded operator.

What a real low-res file went through, as the field synthesises it (Wang et al. 2021, Real-ESRGAN x4plus; the
facts in ../shared/reference/real-photos.md §1), twice: a random blur (isotropic or anisotropic Gaussian,
generalised Gaussian or plateau profiles, or a sinc, 7-21 taps), a random resize (up, down or kept; area,
bilinear or bicubic), Gaussian or Poisson noise in colour or grey, and JPEG; the second time ends with the
resize to 1/scale and a sinc filter before or after the last JPEG. Differences from the release, each for a
reason:
- every image draws everything from its own generator (the release shares one resize scale and one grey
  noise pattern per batch and needs a pair pool to decorrelate them): results do not depend on the batch;
- the JPEG steps are libjpeg's coder at an integer quality (`spgd.operators.jpeg`, bit-exact with Pillow),
  not DiffJPEG's float-quality tables: a real file has integer-quality tables;
- no USM sharpening of the ground truth (a training choice, not a degradation).
`measure` is the random chain; `A` (what a posterior sampler fits) is the antialiased bicubic downscale, the
documented fixed kernel of a real file, with `noise_sigma` the level it assumes.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import as_generators
from .jpeg import Jpeg
from .super_resolution import SuperResolution

KERNEL_SIZES = range(7, 22, 2)  # odd, then zero-padded to 21x21
PADDED = 21
PROFILES = (("iso", 0.45), ("aniso", 0.25), ("generalized_iso", 0.12), ("generalized_aniso", 0.03),
            ("plateau_iso", 0.12), ("plateau_aniso", 0.03))
RESIZE_MODES = ("area", "bilinear", "bicubic")
# the two degradations' settings (Real-ESRGAN x4plus): blur sigma, sinc probability, resize (up, down, keep)
# probabilities and range, Gaussian noise sigma (8-bit), Poisson scale, grey probability, Gaussian probability
FIRST = {"blur_prob": 1.0, "sigma": (0.2, 3.0), "sinc_prob": 0.1, "resize_prob": (0.2, 0.7, 0.1),
         "resize_range": (0.15, 1.5), "noise_sigma": (1.0, 30.0), "poisson": (0.05, 3.0), "gray_prob": 0.4,
         "gaussian_prob": 0.5, "jpeg": (30, 95)}
SECOND = {"blur_prob": 0.8, "sigma": (0.2, 1.5), "sinc_prob": 0.1, "resize_prob": (0.3, 0.4, 0.3),
          "resize_range": (0.3, 1.2), "noise_sigma": (1.0, 25.0), "poisson": (0.05, 2.5), "gray_prob": 0.4,
          "gaussian_prob": 0.5, "jpeg": (30, 95)}
FINAL_SINC_PROB = 0.8


def _uniform(low: float, high: float, g: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _choice(weights: Sequence[float], g: torch.Generator | None) -> int:
    return int(torch.multinomial(torch.tensor(weights, dtype=torch.float64), 1, generator=g))


def sinc_kernel(size: int, cutoff: float) -> Tensor:
    """The circular low-pass (2-D sinc) kernel k(r) = w J1(w r) / (2 pi r), centre w^2 / (4 pi), of odd
    `size`, padded to 21x21 and normalised to sum one."""
    from scipy.special import j1

    half = size // 2
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    r = torch.sqrt(grid[:, None] ** 2 + grid[None, :] ** 2)
    safe = torch.where(r == 0, torch.ones_like(r), r)
    k = cutoff * torch.from_numpy(j1((cutoff * safe).numpy())) / (2 * math.pi * safe)
    k = torch.where(r == 0, torch.full_like(r, cutoff ** 2 / (4 * math.pi)), k)
    return _padded(k / k.sum())


def mixed_kernel(size: int, profile: str, sigma: tuple[float, float], g: torch.Generator | None,
                 padded: int = PADDED) -> Tensor:
    """A random blur kernel of odd `size` with `profile` ("iso", "aniso", "generalized_*", "plateau_*"):
    covariance R(theta) diag(sx^2, sy^2) R(theta)^T (sx = sy for iso), exp(-q/2), exp(-q^beta/2) or
    1/(q^beta + 1) of q = x^T Sigma^-1 x; zero-padded to `padded` x `padded`, summing to one."""
    sx = _uniform(*sigma, g)
    if profile.endswith("iso") and not profile.endswith("aniso"):
        sy, theta = sx, 0.0
    else:
        sy, theta = _uniform(*sigma, g), _uniform(-math.pi, math.pi, g)
    rotation = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]],
                            dtype=torch.float64)
    inverse = torch.linalg.inv(rotation @ torch.diag(torch.tensor([sx ** 2, sy ** 2], dtype=torch.float64))
                               @ rotation.T)
    half = size // 2
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    xy = torch.stack(torch.meshgrid(grid, grid, indexing="xy"), dim=-1)
    q = torch.einsum("hwi,ij,hwj->hw", xy, inverse, xy)
    if profile.startswith("generalized"):
        beta = _uniform(0.5, 1.0, g) if float(torch.rand((), generator=g)) < 0.5 else _uniform(1.0, 4.0, g)
        k = torch.exp(-0.5 * q ** beta)
    elif profile.startswith("plateau"):
        beta = _uniform(1.0, 2.0, g) if float(torch.rand((), generator=g)) < 0.5 else 1.0
        k = 1 / (q ** beta + 1)
    else:
        k = torch.exp(-0.5 * q)
    return _padded(k / k.sum(), padded)


def _padded(k: Tensor, size: int = PADDED) -> Tensor:
    pad = (size - k.shape[-1]) // 2
    return F.pad(k, (pad, pad, pad, pad))


def random_kernel(stage: dict[str, Any], g: torch.Generator | None) -> Tensor:
    """One degradation's blur kernel: a sinc with `sinc_prob`, else a mixed kernel of a random profile."""
    size = KERNEL_SIZES[int(torch.randint(len(KERNEL_SIZES), (), generator=g))]
    if float(torch.rand((), generator=g)) < stage["sinc_prob"]:
        low = math.pi / 3 if size < 13 else math.pi / 5
        return sinc_kernel(size, _uniform(low, math.pi, g))
    profile = PROFILES[_choice([p for _, p in PROFILES], g)][0]
    return mixed_kernel(size, profile, stage["sigma"], g)


def _filter(x: Tensor, kernel: Tensor) -> Tensor:
    """x (1xCxHxW) convolved with `kernel`, edges reflected."""
    pad = kernel.shape[-1] // 2
    channels = x.shape[1]
    weight = kernel.to(x)[None, None].expand(channels, 1, -1, -1)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect" if min(x.shape[-2:]) > pad else "replicate")
    return F.conv2d(padded, weight, groups=channels)


def _resize(x: Tensor, size: tuple[int, int], g: torch.Generator | None) -> Tensor:
    mode = RESIZE_MODES[int(torch.randint(len(RESIZE_MODES), (), generator=g))]
    return F.interpolate(x, size=size, mode=mode, **({} if mode == "area" else {"align_corners": False}))


def _noise(x: Tensor, stage: dict[str, Any], g: torch.Generator | None) -> Tensor:
    """Gaussian (sigma in 8-bit levels) or Poisson noise of random strength, in colour or grey; clipped."""
    gray = float(torch.rand((), generator=g)) < stage["gray_prob"]
    if float(torch.rand((), generator=g)) < stage["gaussian_prob"]:
        sigma = _uniform(*stage["noise_sigma"], g) / 255
        shape = (1, 1, *x.shape[-2:]) if gray else x.shape
        noise = sigma * torch.randn(shape, generator=g, dtype=x.dtype)
    else:
        scale = _uniform(*stage["poisson"], g)
        image = (x.mean(dim=1, keepdim=True) if gray else x).clamp(0, 1)
        image = (image * 255).round() / 255
        levels = 2 ** math.ceil(math.log2(max(len(torch.unique(image)), 2)))
        noise = (torch.poisson(image * levels, generator=g) / levels - image) * scale
    return (x + noise).clamp(0, 1)


def _jpeg(x: Tensor, stage: dict[str, Any], g: torch.Generator | None) -> Tensor:
    """x coded as a JPEG file (libjpeg, 4:2:0) at a random integer quality, and decoded."""
    quality = int(torch.randint(stage["jpeg"][0], stage["jpeg"][1] + 1, (), generator=g))
    return (Jpeg(quality).measure(x * 2 - 1) + 1) / 2


def _resized_by(x: Tensor, stage: dict[str, Any], g: torch.Generator | None) -> Tensor:
    kind = _choice(stage["resize_prob"], g)
    low, high = stage["resize_range"]
    factor = _uniform(1.0, high, g) if kind == 0 else _uniform(low, 1.0, g) if kind == 1 else 1.0
    h, w = x.shape[-2:]
    return _resize(x, (max(int(h * factor), 8), max(int(w * factor), 8)), g)


def degrade(x: Tensor, scale: int, g: torch.Generator | None) -> Tensor:
    """One clean image (1x3xHxW in [0, 1], sides multiples of `scale`) through the second-order chain, drawing
    everything from `g`: its low-resolution image (H/scale x W/scale, 8-bit values)."""
    out_size = (x.shape[-2] // scale, x.shape[-1] // scale)
    for stage in (FIRST, SECOND):
        if float(torch.rand((), generator=g)) < stage["blur_prob"]:
            x = _filter(x, random_kernel(stage, g))
        if stage is FIRST:
            x = _resized_by(x, stage, g)
        else:
            kind = _choice(stage["resize_prob"], g)  # relative to the final size, as the release does
            low, high = stage["resize_range"]
            factor = _uniform(1.0, high, g) if kind == 0 else _uniform(low, 1.0, g) if kind == 1 else 1.0
            x = _resize(x, (max(int(out_size[0] * factor), 8), max(int(out_size[1] * factor), 8)), g)
        x = _noise(x, stage, g)
        if stage is FIRST:
            x = _jpeg(x, stage, g)
    size = KERNEL_SIZES[int(torch.randint(len(KERNEL_SIZES), (), generator=g))]
    final = sinc_kernel(size, _uniform(math.pi / 3, math.pi, g)) if float(torch.rand((), generator=g)) \
        < FINAL_SINC_PROB else None
    if float(torch.rand((), generator=g)) < 0.5:  # resize + sinc, then JPEG
        x = _resize(x, out_size, g)
        x = _filter(x, final) if final is not None else x
        x = _jpeg(x.clamp(0, 1), SECOND, g)
    else:  # JPEG, then resize + sinc
        x = _jpeg(x.clamp(0, 1), SECOND, g)
        x = _resize(x, out_size, g)
        x = _filter(x, final) if final is not None else x
    return (x.clamp(0, 1) * 255).round() / 255


class RealWorldSR(SuperResolution):
    """Real-world `scale`x super-resolution: `measure` is the random second-order chain (`degrade`, per image
    from its own generator), A the antialiased bicubic downscale a sampler fits with `noise_sigma`."""

    name = "real_sr"
    linear = True

    def __init__(self, scale: int = 4, noise_sigma: float = 0.05) -> None:
        super().__init__(scale=scale, noise_sigma=noise_sigma)

    def measure(self, x: Tensor, generator: Any = None) -> Tensor:
        """The degraded low-resolution images of [-1, 1] images x, image i drawn from generator i."""
        self.measurement_shape(x.shape[1:])  # sides must be multiples of the scale
        generators = as_generators(generator, x.shape[0])
        with torch.no_grad():
            low = [degrade(((image[None].float().cpu() + 1) / 2).clamp(0, 1), self.scale, g)
                   for image, g in zip(x, generators)]
        return (torch.cat(low) * 2 - 1).to(x.device, x.dtype)

    def params(self) -> dict[str, Any]:
        return {"name": self.name, "scale": self.scale, "noise_sigma": self.noise_sigma}


__all__ = ["RealWorldSR", "degrade", "mixed_kernel", "sinc_kernel", "random_kernel"]
