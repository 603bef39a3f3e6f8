"""The stable Python API: simulate a measurement, restore an image.

Clean and restored images are NCHW float tensors in [0, 1] here, at the API edge; inside, and in
measurements y, the published [-1, 1] convention holds (noise sigma is stated in those units).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from .protocols import Operator
from .threads import set_threads
from .seeding import image_seeds, make_generators


def to_model_range(x01: Tensor) -> Tensor:
    """[0, 1] images -> [-1, 1]."""
    return x01 * 2 - 1


def to_image_range(x: Tensor) -> Tensor:
    """[-1, 1] images -> [0, 1], clipped (NaN, marking a failed image, stays NaN)."""
    return ((x + 1) / 2).clamp(0, 1)


def simulate(x: Tensor, operator: Operator, seed: int | Sequence[int] = 0) -> Tensor:
    """The measurement y = A(x) + noise of clean images x in [0, 1], seeded per image.

    Random operator parameters (masks, kernels) are drawn here, per image, and kept in the operator.
    """
    _check_batch(x, "x")
    generators = make_generators(seed, x.shape[0], "measure")
    with torch.no_grad():
        return operator.measure(to_model_range(x), generators)


def restore(y: Tensor, operator: Operator, prior: Any = None, sampler: str = "spgd",
            seed: int | Sequence[int] = 0, x_start: Tensor | None = None, keep_measured: bool = False,
            tiling: str = "blend", **sampler_params: Any) -> Tensor:
    """Restored images in [0, 1] from measurements y with the named method (a posterior sampler, or "diffir")
    and its model (`prior`: a diffusion prior, or trained weights; by default the built-in one for the operator
    and the image size, on y's device: the face prior at 64x64, else the natural one, or the built-in DiffIR
    weights for the operator).

    y is checked against the operator and the model first (`check_measurement`). `x_start` (in the
    sampler's own units, e.g. sigma_max-scaled noise) overrides the seeded start. The settings are the
    method's defaults and `sampler_params` (the task presets and a prior's recommended settings are
    applied by `spgd.plan`, which the apps use). `mean_of=K` (any method) returns the mean
    of K runs from independent seeds per image, an estimate of the posterior mean (`mean_of_runs`);
    `antithetic=True` makes them pairs of a seed's draws and their negatives, which keeps less of the variance.
    `keep_measured=True` puts the entries y measures directly back into the result (inpainting: the
    known pixels, noise included, so a measured photo's own pixels come back unchanged); operators that
    measure no pixel directly leave the result as the sampler made it (`keep_measured_pixels`).
    `tiling`: how a fixed-size prior covers another size, "blend" (overlapping tiles, the default) or
    "shift" (the grid moved at random at every call, a quarter-tile overlap: fewer network passes;
    docs/any-size.md, and BENCHMARKS.md for how many). An operator that estimates a parameter with the image
    (`supports("refit")`: blind_deblur's kernel) holds the M-step on the result afterwards (`operator.kernel`).
    """
    from . import methods

    if prior is None:
        size = tuple(operator.input_shape(y)[-2:])
        prior = methods.builtin_model(sampler, "", operator, size, device=str(y.device))
    settings = {**methods.method_settings(sampler), **sampler_params}
    progress, trace = settings.pop("progress", True), settings.pop("trace", None)
    restorer = methods.build_restorer(sampler, prior, settings, tiling)
    restorer.check(operator)
    check_measurement(y, operator, restorer)
    if y.device.type == "cpu":
        set_threads(None)  # one torch thread per free core, unless the user fixed the count
    x = restorer.restore(operator, y, image_seeds(seed, y.shape[0]), x_start=x_start, trace=trace, progress=progress)
    refit_on_result(x, y, operator)
    return to_image_range(keep_measured_pixels(x, y, operator) if keep_measured else x)


def refit_on_result(x: Tensor, y: Tensor, operator: Operator) -> dict[str, Tensor]:
    """The last M-step of a blind task: the parameters the operator estimates with the image (a blind blur's
    kernel) refitted on the restored x ([-1, 1]; a failed image's NaNs as zeros), kept in it and returned
    ({name: one per image}); {} for an operator that estimates none."""
    return operator.refit(x.nan_to_num(), y) if operator.supports("refit") else {}


def keep_measured_pixels(x: Tensor, y: Tensor, operator: Operator) -> Tensor:
    """x ([-1, 1]) with the entries y measures directly put back, as the operator answers
    (`with_measured`); x itself where it answers None or has no such method. Failed (NaN) images stay NaN."""
    put_back = getattr(operator, "with_measured", None)
    kept = put_back(x, y) if put_back is not None else None
    if kept is None:
        return x
    failed = torch.isnan(x).flatten(1).any(1).view(-1, *[1] * (x.dim() - 1))
    return torch.where(failed, x, kept)


def check_measurement(y: Tensor, operator: Operator, model: Any) -> None:
    """A ValueError, worded like the command line's, unless y is a finite NCHW batch of measurements of
    images with the model's channels (any size: a fixed-size prior runs on tiles, `spgd.priors.tiled`)."""
    if not isinstance(y, Tensor) or y.dim() != 4:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be an NCHW batch of measurements, got {shape}")
    if not torch.isfinite(y).all():
        raise ValueError("y contains NaN or infinite values")
    _, channels, height, width = operator.input_shape(y)
    if channels != model.image_channels:
        raise ValueError(f"y is the {operator.name} measurement of {channels}-channel images; the model restores "
                         f"{model.image_channels}-channel images")


def _check_batch(x: Tensor, name: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{name} must be an NCHW batch, got shape {tuple(x.shape)}")
