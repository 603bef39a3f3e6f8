"""The two contracts the rooms meet at: a prior is a `Denoiser`, a forward model an `Operator`.

Samplers are written against these alone (they import neither `priors` nor `operators`), so any
object with these attributes works: a network of any checkpoint format behind `priors`, a closed-form
Gaussian prior in the tests, a forward model of the user's own.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Denoiser(Protocol):
    """D(x, sigma) ~ E[x0 | x0 + sigma n = x] for images in [-1, 1], and the noise levels it knows.

    `sigma_min`/`sigma_max`: the range continuous samplers clamp their levels to. `ladder`: the
    ascending discrete levels (float64) DDPM-chain samplers walk: the training ladder of a discrete
    prior, a standard 1,000-level one for a continuous prior. Optional: `tile_denoiser`, (a fixed-size
    denoiser, its side) where this one runs that on tiles, for samplers with a tiling of their own;
    `for_seeds(seeds)`, the denoiser for a run of images with these seeds, where it draws at random itself
    (random-shift tiles); `spgd.restore` calls it before each run, so no sampler needs to.
    """

    image_channels: int
    sigma_min: float
    sigma_max: float

    @property
    def image_size(self) -> int | None: ...

    @property
    def ladder(self) -> Tensor: ...

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor: ...


class SVD(Protocol):
    """A = U diag(s) V^T, with spectral coefficients shaped like the image batch.

    `V_adjoint(x)`/`V(c)` map images to coefficients and back, `U_adjoint(y)`/`U(c)` measurements
    (coefficients without a measurement counterpart are 0); `s` broadcasts against the coefficients
    and is 0 on A's null space. So A x = U(s * V_adjoint(x)); U and V are orthogonal. The
    coefficients of U_adjoint(y) where s = 0 are the part of y outside A's range: use them only
    multiplied by s. Noise in coefficient space is V_adjoint of image-space noise.
    """

    s: Tensor

    def V_adjoint(self, x: Tensor) -> Tensor: ...  # noqa: N802

    def V(self, c: Tensor) -> Tensor: ...  # noqa: N802

    def U_adjoint(self, y: Tensor) -> Tensor: ...  # noqa: N802

    def U(self, c: Tensor) -> Tensor: ...  # noqa: N802


@runtime_checkable
class Operator(Protocol):
    """A forward model y = A(x) + noise that answers its own questions.

    `supports(name)` says which optional answers it has: "adjoint" (A_adjoint), "pinv" (A_pinv and
    `null`), "svd" (`svd(shape, device, dtype)`, an `SVD` for image batches of that shape), and, for the
    apps, "unknown_pixels" (`mark_unknown(unknown)`: it can leave any pixel out, e.g. a transparent one).
    `input_shape(y)` is the image batch shape behind a measurement, `preview(y)` the [0, 1] picture
    a person sees of it. Optional: `with_measured(x, y)`, x with the entries y measures directly put
    back (None, or no such method, when it measures none); `restore(..., keep_measured=True)` asks it.
    """

    name: str
    linear: bool
    noise_sigma: float

    def A(self, x: Tensor) -> Tensor: ...  # noqa: N802 - the field's notation

    def A_adjoint(self, y: Tensor) -> Tensor: ...  # noqa: N802

    def A_pinv(self, y: Tensor) -> Tensor: ...  # noqa: N802

    def null(self, x: Tensor) -> Tensor: ...

    def svd(self, shape: Sequence[int], device: torch.device | str | None = None,
            dtype: torch.dtype = torch.float32) -> SVD: ...

    def supports(self, capability: str) -> bool: ...

    def input_shape(self, y: Tensor) -> tuple[int, ...]: ...

    def preview(self, y: Tensor) -> Tensor: ...

    def measure(self, x: Tensor, generator: Sequence[torch.Generator] | torch.Generator | None = None) -> Tensor: ...
