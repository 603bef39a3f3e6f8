"""The operator interface: a forward model y = A(x) + noise, with explicit, reproducible parameters.

Images are NCHW tensors in [-1, 1]. Measurement noise `noise_sigma` is in those units, as in the
published code. Operators whose parameters are random (masks, kernels) draw them per image from
that image's `torch.Generator`, so a batch of three gives the same result as three runs of one.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ..seeding import randn_per_image
from .noise import GaussianNoise


def as_generators(generator: Any, batch: int) -> list[torch.Generator | None]:
    """Normalise `generator` (None, one generator or one per image) to a list of length `batch`."""
    if generator is None or isinstance(generator, torch.Generator):
        if batch > 1 and generator is not None:
            raise ValueError(
                "a single torch.Generator was given for a batch of "
                f"{batch} images; pass one generator per image so results do not depend on batch size"
            )
        return [generator] * batch
    generators = list(generator)
    if len(generators) != batch:
        raise ValueError(f"got {len(generators)} generators for a batch of {batch} images")
    return generators


def randn_like_per_image(x: Tensor, generators: Sequence[torch.Generator | None]) -> Tensor:
    """Standard normal noise shaped like `x`, image i drawn from generators[i] (on the CPU, then moved)."""
    return randn_per_image(x.shape[1:], generators, x.device, x.dtype)


CAPABILITIES = ("adjoint", "pinv", "svd", "refit")


class Operator(torch.nn.Module):
    """Base class of all forward models: each answers the questions samplers and apps ask of it.

    Subclasses implement `A`; linear ones also `A_adjoint` (exact adjoint, so <Ax, y> = <x, A^T y>)
    and may implement `A_pinv` (then `null` follows) and an SVD (`supports` tells which), and operators that
    can leave any pixel out `mark_unknown` (`takes_unknown_pixels`). It is both the physics
    (`spgd.protocols.Operator`) and what the apps ask about files (`spgd.protocols.Acquisition`). Random
    parameters are drawn in `draw(x, generators)`; `measure` calls it first, then the noise model `noise`
    (Gaussian of `noise_sigma` unless the operator holds another) with the same per-image generators. `image_measurement` says whether a
    measurement is an image a person can bring as a file (`as_measurement` makes it one y).
    """

    name: str = "operator"
    linear: bool = False
    image_measurement: bool = False
    file_parameters: tuple[str, ...] = ()  # parameters a person gives as files ("mask", "kernel")
    measured_parameters: tuple[str, ...] = ()  # parameters a measurement tells: estimated from it unless given
    # parameters a measurement cannot tell and a preset only assumes (a blur's width): a measured input needs
    # one of them, or a file parameter, given by the person
    assumed_parameters: tuple[str, ...] = ()

    def __init__(self, noise_sigma: float = 0.0) -> None:
        super().__init__()
        self.noise = GaussianNoise(noise_sigma)  # the noise model `measure` applies after A

    @property
    def noise_sigma(self) -> float:
        """The measurement noise level samplers weigh the data by ([-1, 1] units): the noise model's."""
        return self.noise.sigma

    @noise_sigma.setter
    def noise_sigma(self, value: float) -> None:
        self.noise = GaussianNoise(value)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802 - the field's notation
        raise NotImplementedError

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        raise NotImplementedError(f"{self.name} is not linear: it has no adjoint")

    def A_pinv(self, y: Tensor) -> Tensor:  # noqa: N802
        """The pseudo-inverse A^+ y (see `supports("pinv")`)."""
        raise NotImplementedError(f"{self.name} has no pseudo-inverse")

    def null(self, x: Tensor) -> Tensor:
        """The part of x that A does not see: (I - A^+ A) x."""
        return x - self.A_pinv(self.A(x))

    def svd(self, shape: Sequence[int], device: torch.device | str | None = None,
            dtype: torch.dtype = torch.float32) -> Any:
        """A = U diag(s) V^T for image batches of `shape` (see `operators/svd.py`; `supports("svd")`)."""
        raise NotImplementedError(f"{self.name} has no singular value decomposition{self.svd_hint()}")

    def svd_hint(self) -> str:
        """Why this operator has no SVD and what would give it one ("" when nothing would)."""
        return ""

    def has_svd(self) -> bool:
        """Whether `svd` answers now (subclasses whose SVD depends on their parameters override this)."""
        return type(self).svd is not Operator.svd

    def supports(self, capability: str) -> bool:
        """Whether this operator answers "adjoint", "pinv" (A_pinv and null), "svd" or "refit" (`start_estimate`,
        `refit` and `forget_refitted`: parameters re-estimated from an image estimate, as blind methods need)."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown operator capability {capability!r}; known: {CAPABILITIES}")
        if capability == "svd":
            return self.has_svd()
        method = {"adjoint": "A_adjoint", "pinv": "A_pinv", "refit": "refit"}[capability]
        return getattr(type(self), method) is not getattr(Operator, method)

    @property
    def takes_unknown_pixels(self) -> bool:
        """Whether it can leave any pixel out (`mark_unknown`), e.g. an input's transparent pixels."""
        return type(self).mark_unknown is not Operator.mark_unknown

    def input_shape(self, y: Tensor) -> tuple[int, ...]:
        """Shape of the image batch x that produced measurement y (samplers start from it)."""
        return tuple(y.shape)

    def measurement_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of the measurement of images of `image_shape` (the inverse of `input_shape`)."""
        return tuple(image_shape)

    def preview(self, y: Tensor) -> Tensor:
        """What a person sees of a measurement, as [0, 1] images (the measurement itself by default)."""
        return ((y + 1) / 2).clamp(0, 1)

    def as_measurement(self, image: Tensor) -> Tensor:
        """A measured image file (in [-1, 1]) as the measurement y this operator produces."""
        return image

    def with_measured(self, x: Tensor, y: Tensor) -> Tensor | None:
        """x with the entries that y measures directly (pixels y holds as they are, e.g. the known
        pixels of inpainting) replaced by y's values; None when y measures no entry of x directly."""
        return None

    def mark_unknown(self, unknown: Tensor) -> None:
        """Also leave out the pixels where `unknown` (Nx1xHxW or 1x1xHxW, true = unknown) is true, on top of
        this operator's own parameters, given or still to be drawn (see `takes_unknown_pixels`)."""
        raise NotImplementedError(f"{self.name} cannot leave pixels out")

    def fit_to_measurement(self, y: Tensor, files: Sequence[Any] | None = None) -> dict[str, Any]:
        """Estimate the `measured_parameters` left unset from the measurement y itself, or read them from the
        files it came from (`files`, when it did), and keep them; returns what was found (empty when nothing)."""
        return {}

    def start_estimate(self, y: Tensor) -> None:
        """Set the parameters `refit` estimates to where a blind method starts from, for measurements y."""
        raise NotImplementedError(f"{self.name} estimates none of its parameters from an image")

    def forget_refitted(self) -> None:
        """Forget the parameters `refit` estimates (a simulated truth), so that no restorer runs with them."""
        raise NotImplementedError(f"{self.name} estimates none of its parameters from an image")

    def refit(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Re-estimate the parameters a measurement does not tell (a blind blur's kernel) from the current image
        estimate x and the measurements y, keep them, and return them ({name: one per image})."""
        raise NotImplementedError(f"{self.name} estimates none of its parameters from an image")

    def unset_parameters(self) -> list[str]:
        """Parameters drawn at random when simulating that a real measurement must come with (unset now)."""
        return []

    def forward(self, x: Tensor) -> Tensor:
        return self.A(x)

    def draw(self, x: Tensor, generators: Sequence[torch.Generator | None]) -> None:
        """Draw any random parameters (one set per image of `x`) that are not fixed yet."""

    def measure(self, x: Tensor, generator: Any = None) -> Tensor:
        """y = A(x) + noise_sigma * n, with n (and any random parameters) drawn per image."""
        generators = as_generators(generator, x.shape[0])
        self.draw(x, generators)
        return self.noise(self.A(x), generators)

    def update(self, **params: Any) -> "Operator":
        """Change parameters in place (DeepInverse-style), e.g. `op.update(mask=m)`; returns self."""
        for key, value in params.items():
            if not hasattr(self, key):
                raise TypeError(f"{self.name} has no parameter {key!r}")
            setattr(self, key, value)
        return self

    def params(self) -> dict[str, Any]:
        """The parameters that reproduce this operator exactly (tensors included)."""
        return {"name": self.name, "noise_sigma": self.noise_sigma}
