"""Classical (prior-free) restoration baselines that diffusion-prior results are compared against.

`classical_restore(y, operator, method)` restores a batch of measurements with one of:

- `bicubic` (super-resolution): bicubic upsampling of y to the operator's input size.
- `biharmonic` (inpainting): scikit-image's biharmonic inpainting of each image's missing pixels.
- `wiener` (blur): scikit-image's Wiener-Hunt deconvolution (Laplacian regulariser) with the
  operator's exact kernel.
- `richardson_lucy` (blur): scikit-image's Richardson-Lucy deconvolution with that kernel.

Images are NCHW tensors in [-1, 1] in and out (the samplers' convention); each image is restored on
its own, with its own mask or kernel (scikit-image's restoration module does the work).

The two noise-dependent settings follow the operator's `noise_sigma` (σ, [-1, 1] units, never
below the rounding noise of an 8-bit image, 0.0023). They were tuned on the 10 ffhq-demo faces
(Lanczos-resized to 64x64) blurred by the `gaussian_blur` kernel (61x61, std 3) with noise σ,
image k seeded k as `spgd bench` does; mean PSNR (dB) over the 10 faces, the blurred input giving
19.8, 19.8, 19.7 and 19.5 dB at σ = 0.005, 0.01, 0.02 and 0.05:

- Wiener's `balance` (the weight of the regulariser against the data): the optimal one is the
  noise-to-signal power ratio, so balance = C σ². C = 10 is the best, or within 0.005 dB of C = 7,
  at every σ measured, with the higher SSIM (0.725 against 0.722 at σ = 0.01):

  | σ | C = 3 | 5 | 7 | 10 | 15 | 20 | 30 |
  |---|---|---|---|---|---|---|---|
  | 0.005 | 23.64 | 23.77 | **23.80** | 23.80 | 23.76 | 23.72 | 23.65 |
  | 0.01 | 23.17 | 23.31 | 23.35 | **23.35** | 23.32 | 23.27 | 23.19 |
  | 0.02 | 22.63 | 22.80 | 22.84 | **22.85** | 22.81 | 22.76 | 22.67 |
  | 0.05 | 21.80 | 21.99 | 22.05 | **22.06** | 22.03 | 21.98 | 21.89 |

- Richardson-Lucy's `num_iter`: iterations sharpen, and amplify noise, so the best count falls
  with σ (about 900 at 0.01, 300 at 0.02, 75 at 0.05); num_iter = C σ^-1.5 follows it. C = 0.8 and
  1.0 are within 0.02 dB at every σ; 0.8 has the better SSIM (0.719 against 0.718 at σ = 0.01) and
  runs fewer iterations. Capped at 1000 for run time (about 9 s per 64x64 RGB image on one core):

  | σ | C = 0.4 | 0.6 | 0.8 | 1.0 | 1.3 |
  |---|---|---|---|---|---|
  | 0.01 | 22.98 | 23.07 | 23.11 | **23.13** | 23.13 |
  | 0.02 | 22.51 | 22.59 | 22.63 | **22.63** | 22.61 |
  | 0.03 | 22.20 | 22.30 | **22.33** | 22.32 | 22.29 |
  | 0.05 | 21.77 | 21.88 | **21.91** | 21.91 | 21.86 |

Motion-blur kernels were not part of the tuning; the same rules apply to them.
"""
from __future__ import annotations

import math
from functools import partial
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .operators import Blur, Inpainting, Operator, SuperResolution

# The rounding noise of an 8-bit image ([-1, 1] units): the least noise any stored image carries.
QUANTISATION_SIGMA = 2 / 255 / math.sqrt(12)
# Tuned on ffhq-demo (see the module docstring): balance = 10 σ², num_iter = 0.8 σ^-1.5 (at most 1000).
WIENER_BALANCE_PER_VARIANCE = 10.0
RL_ITERATIONS_SCALE = 0.8
RL_MAX_ITERATIONS = 1000

_FAMILIES: tuple[tuple[type[Operator], tuple[str, ...]], ...] = (
    (SuperResolution, ("bicubic",)),
    (Inpainting, ("biharmonic",)),
    (Blur, ("wiener", "richardson_lucy")),
)
METHODS = tuple(method for _, methods in _FAMILIES for method in methods)


def baseline_methods(operator: Operator) -> list[str]:
    """The classical methods that apply to `operator` (by its family); empty for the others."""
    for family, methods in _FAMILIES:
        if isinstance(operator, family):
            return list(methods)
    return []


def wiener_balance(noise_sigma: float) -> float:
    """Wiener's regularisation weight for measurement noise `noise_sigma` ([-1, 1] units): see the module."""
    return WIENER_BALANCE_PER_VARIANCE * max(noise_sigma, QUANTISATION_SIGMA) ** 2


def richardson_lucy_iterations(noise_sigma: float) -> int:
    """Richardson-Lucy's iteration count for measurement noise `noise_sigma` ([-1, 1] units): see the module."""
    return min(RL_MAX_ITERATIONS, round(RL_ITERATIONS_SCALE * max(noise_sigma, QUANTISATION_SIGMA) ** -1.5))


def classical_restore(y: Tensor, operator: Operator, method: str, *, balance: float | None = None,
                      num_iter: int | None = None) -> Tensor:
    """Restore the measurements y (NCHW, [-1, 1]) of `operator` with a classical `method`, per image.

    Returns NCHW images of the operator's input size in [-1, 1], on y's device. `balance` (wiener)
    and `num_iter` (richardson_lucy) override the tuned defaults (see the module constants).
    """
    if method not in METHODS:
        raise ValueError(f"unknown classical method {method!r}; methods: {', '.join(METHODS)}")
    applicable = baseline_methods(operator)
    if method not in applicable:
        raise ValueError(f"classical method {method!r} does not apply to the {operator.name} operator "
                         f"(it applies to: {', '.join(applicable) or 'no classical method'})")
    if y.dim() != 4:
        raise ValueError(f"y must be an NCHW batch, got shape {tuple(y.shape)}")
    if method == "bicubic":
        return _bicubic(y, operator)
    from skimage import restoration as skimage
    y01 = ((y.detach().cpu().double() + 1) / 2).clamp(0, 1).numpy()
    if method == "biharmonic":
        known = operator.A(torch.ones_like(y)).detach().cpu()[:, 0].numpy() > 0.5  # per image, as applied
        restored = [skimage.inpaint_biharmonic(image.transpose(1, 2, 0), ~mask, channel_axis=-1).transpose(2, 0, 1)
                    for image, mask in zip(y01, known)]
    else:
        if method == "wiener":
            weight = wiener_balance(operator.noise_sigma) if balance is None else balance
            deconvolve = partial(_wiener, skimage, balance=weight)
        else:
            iterations = richardson_lucy_iterations(operator.noise_sigma) if num_iter is None else num_iter
            deconvolve = partial(_richardson_lucy, skimage, num_iter=iterations)
        restored = [np.stack([deconvolve(channel, kernel) for channel in image])
                    for image, kernel in zip(y01, _kernels(operator, len(y01)))]
    x01 = torch.from_numpy(np.stack(restored)).clamp(0, 1)
    return (x01 * 2 - 1).to(device=y.device, dtype=y.dtype)


def _bicubic(y: Tensor, operator: Operator) -> Tensor:
    """Bicubic upsampling (torch's, half-pixel centres: the downsampling's own pixel geometry)."""
    size = operator.input_shape(y)[-2:]
    return F.interpolate(y, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)


def _kernels(operator: Operator, batch: int) -> list[np.ndarray]:
    """Each image's blur kernel as a float64 array (a shared kernel repeated)."""
    kernel = operator.kernel
    if kernel is None:
        raise ValueError(f"{operator.name}: no kernel set; measure() draws it, or pass kernel=")
    kernel = kernel.detach().cpu().double().reshape(-1, *kernel.shape[-2:]).numpy()
    if kernel.shape[0] not in (1, batch):
        raise ValueError(f"{operator.name}: {kernel.shape[0]} per-image kernels for a batch of {batch} images")
    return [kernel[0]] * batch if kernel.shape[0] == 1 else list(kernel)


def _wiener(skimage: ModuleType, channel: np.ndarray, kernel: np.ndarray, balance: float) -> np.ndarray:
    """Wiener-Hunt deconvolution of one channel blurred by the operator (reflect padding, correlation).

    The operator reflects the image at its borders before blurring, so for a kernel that is
    symmetric under mirroring each axis (the Gaussian) its output mirrored the same way is the
    circular blur of the image's mirror-periodic extension (period 2n - 2 per axis); for other
    kernels (motion blur) that holds only approximately near the borders. Wiener's FFT solves the
    circular problem exactly: deconvolve one period, keep its first n x n pixels. The operator
    correlates and scikit-image convolves, so the kernel is flipped.
    """
    height, width = channel.shape
    period = np.pad(channel, ((0, height - 2), (0, width - 2)), mode="reflect")
    restored = skimage.wiener(period, kernel[::-1, ::-1], balance, clip=False)
    return restored[:height, :width]


def _richardson_lucy(skimage: ModuleType, channel: np.ndarray, kernel: np.ndarray, num_iter: int) -> np.ndarray:
    """Richardson-Lucy deconvolution of one channel in [0, 1] blurred by the operator.

    scikit-image's RL blurs with zero padding, unlike the operator's reflection, and the mismatch at
    the border creeps inwards with every iteration. So the channel is first extended by reflection
    by twice the kernel size (at most its side - 1), far enough that the image itself is unaffected
    (on a noise-free 9x9 blur, 1000 iterations: 35.2 dB against 21.5 dB with the kernel's radius),
    and cropped back afterwards. The operator correlates and scikit-image convolves: the kernel is
    flipped.
    """
    pads = [min(2 * kernel.shape[-1], side - 1) for side in channel.shape]
    padded = np.pad(channel, [(pad, pad) for pad in pads], mode="reflect")
    restored = skimage.richardson_lucy(padded, kernel[::-1, ::-1].copy(), num_iter=num_iter, clip=False)
    return restored[pads[0]:pads[0] + channel.shape[0], pads[1]:pads[1] + channel.shape[1]]
