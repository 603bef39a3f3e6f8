"""Blind deblurring: a uniform blur whose kernel nobody measured, estimated with the image.

A shaken or defocused photo comes with no kernel. `BlindBlur` is a `Blur` whose kernel is unknown on a
measured input (the restorer estimates it: `refit` is the M-step, `spgd.operators.kernel_estimation`) and, when
simulating or making training pairs, drawn per image from the families real blur has
(`spgd.operators.blur_kernels`: camera shake, defocus, Gaussian, at random sizes up to `kernel_size`).
`noise_sigma_range` draws each image's Gaussian noise level (in [-1, 1] units) in a range; with no level given on
a measured input it is estimated from the image (Chen et al.'s patch PCA, as `denoising` does).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .blur import Blur
from .blur_kernels import MIN_SIZE, blind_kernel
from .kernel_estimation import estimate_kernel
from .noise import GaussianNoise, from_8bit
from .noise_level import estimate_noise_level


class BlindBlur(Blur):
    """y = k * x + n with k unknown: drawn per image by `draw` (`blind_kernel`), estimated on a measured input
    by the restorer (`refit`, the M-step), or given (`kernel`, then it is plain non-blind deblurring)."""

    name = "blind_deblur"
    measured_parameters = ("kernel", "noise_sigma")

    def __init__(self, kernel_size: int = 31, noise_sigma: float | None = None,
                 noise_sigma_range: Sequence[float] | None = None, kernel: Tensor | None = None,
                 pinv_cutoff: float = 3e-2, boundary: str = "reflect", smoothness: float = 1e-5,
                 refit_iterations: int = 200, start_width: float = 2.0, kernel_prior: str | None = None,
                 prior_weight: float = 1e-3, prior_sigma: float = 0.05, hqs_iterations: int = 3) -> None:
        if kernel_size % 2 != 1 or kernel_size < MIN_SIZE:
            raise ValueError(f"blind_deblur: kernel_size must be odd and >= {MIN_SIZE}, got {kernel_size}")
        super().__init__(kernel, noise_sigma or 0.0, pinv_cutoff, boundary)
        self.kernel_size = int(kernel_size)
        self.smoothness = float(smoothness)
        self.refit_iterations = int(refit_iterations)
        self.start_width = float(start_width)
        self._refitted: Tensor | None = None  # the last M-step's kernels (the next one starts from them)
        self.kernel_prior, self.prior_weight = kernel_prior, float(prior_weight)
        self.prior_sigma, self.hqs_iterations = float(prior_sigma), int(hqs_iterations)
        self._denoiser: Any = None
        self.noise_sigma_range = None if noise_sigma_range is None else [float(v) for v in noise_sigma_range]
        self.noise_given = noise_sigma is not None
        self.noise = GaussianNoise(noise_sigma or 0.0, self.noise_sigma_range)

    def draw(self, x: Tensor, generators: Sequence[torch.Generator | None]) -> None:
        if self.kernel is None:
            self.kernel = torch.stack([blind_kernel(self.kernel_size, g) for g in generators]).to(x.device)

    def fit_to_measurement(self, y: Tensor, files: Sequence[Any] | None = None) -> dict[str, Any]:
        """With no noise level given, the mean of the images' patch-PCA estimates ([-1, 1] units)."""
        if self.noise_given:
            return {}
        levels = [estimate_noise_level(image.cpu() / 2 + 0.5) for image in y]
        self.noise = GaussianNoise(from_8bit(sum(levels) / len(levels)))
        self.noise_given = True
        return {"noise_sigma": round(self.noise.sigma, 5), "estimated_by": "patch_pca (Chen et al. 2015)"}

    def start_estimate(self, y: Tensor) -> None:
        """A kernel given by the person is where the estimate starts; else every image's kernel is set to a wide
        blob, exp(-r / `start_width`) (GibbsDDRM's start): the E-step then sharpens too much rather than too
        little, so the M-step narrows the kernel instead of settling on the identity, where EM from a Dirac stays
        (MAP over image and kernel prefers no blur)."""
        if self.kernel is not None and self.kernel is not self._refitted:
            return
        grid = torch.arange(self.kernel_size, dtype=torch.float32, device=y.device) - self.kernel_size // 2
        blob = torch.exp(-torch.sqrt(grid[:, None] ** 2 + grid[None, :] ** 2) / self.start_width)
        self.kernel = (blob / blob.sum()).expand(y.shape[0], -1, -1).clone()

    def forget_refitted(self) -> None:
        self.kernel = self._refitted = None

    def _no_kernel(self) -> Exception:
        return ValueError(f"{self.name}: the kernel is unknown and this method does not estimate it; run the "
                          "task's default (DiffIR) or --sampler fast_em, or give the kernel (--kernel FILE)")

    def refit(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """The M-step: each image's kernel re-estimated from the current image estimate x and the blurry y
        (constrained least squares with a smoothness prior on y's pixels whose blur stays inside the image,
        `estimate_kernel`), warm-started from the previous M-step's kernel (any other kernel, a start or a
        simulated truth, is not used), non-negative, summing to one and centred. With `kernel_prior` (a kernel
        denoiser file, e.g. builtin:kernel31): `hqs_iterations` of half-quadratic splitting, each that least
        squares pulled towards the denoised kernel (weight `prior_weight`), then the kernel denoised at
        `prior_sigma` of its peak (Fast Diffusion EM's M-step)."""
        boundary = "circular" if self.boundary == "circular" else "valid"
        warm = self.kernel is not None and self.kernel is self._refitted
        if self.kernel_prior is not None and self._denoiser is None:
            from .kernel_prior import load_kernel_prior

            self._denoiser = load_kernel_prior(self.kernel_prior)
        kernels = []
        for k, (xi, yi) in enumerate(zip(x, y)):
            start = self.kernel[k % self.kernel.shape[0]].flip(-2, -1) if warm else None
            found = estimate_kernel(xi, yi, self.kernel_size, self.smoothness, self.refit_iterations, boundary, start)
            for _ in range(self.hqs_iterations if self._denoiser is not None else 0):
                anchor = self._denoiser.denoise(found, self.prior_sigma)
                found = estimate_kernel(xi, yi, self.kernel_size, self.smoothness, self.refit_iterations, boundary,
                                        found, anchor, self.prior_weight)
            kernels.append(found.flip(-2, -1))  # A correlates with its kernel: the convolution kernel flipped
        self.kernel = self._refitted = torch.stack(kernels).to(x.device)
        return {"kernel": self.kernel}

    def unset_parameters(self) -> list[str]:
        return []

    def params(self) -> dict[str, Any]:
        params = {**super().params(), "kernel_size": self.kernel_size, "smoothness": self.smoothness,
                  "refit_iterations": self.refit_iterations, "start_width": self.start_width,
                  "kernel_prior": self.kernel_prior, "prior_weight": self.prior_weight,
                  "prior_sigma": self.prior_sigma, "hqs_iterations": self.hqs_iterations,
                  "noise_sigma_range": self.noise_sigma_range,
                  "noise_sigma": self.noise.sigma if self.noise_given else None}
        return params

