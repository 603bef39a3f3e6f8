"""The one run layer of `spgd restore`, `spgd bench` and the web page: a resolved run spec, and one batch
taken from images to a restored result (make the operator, measure or read the measurement, restore,
preview). The apps around it only read inputs and write files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from . import io
from .api import restore, simulate, to_model_range
from .operators import Operator, load_mask, make_operator
from .priors.tiled import check_tiling
from .protocols import Denoiser
from .samplers import Trace, takes_reference
from .tasks import load_task, setting_layers


@dataclass
class RunSpec:
    """What determines a run's results: prior, operator parameters, sampler and its resolved settings."""

    prior: Denoiser
    operator: dict[str, Any]
    sampler: str
    settings: dict[str, Any]
    device: str = "cpu"
    model_name: str = ""
    recommended: dict[str, Any] = field(default_factory=dict)  # the part of `settings` the prior chose
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)  # where `settings` came from (make_spec)
    reference_file: str = ""  # the image file of settings["reference"], if any
    mask_file: str = ""  # the file of operator["mask"], if any
    own_size: bool = False  # images are restored at their own size unless resized (`restored_size`), else at the prior's
    tiling: str = "blend"  # how a fixed-size prior covers another size (`spgd.restore`'s `tiling`)

    def make_operator(self) -> Operator:
        """A fresh operator (random parameters not drawn yet) on the run's device."""
        return make_operator(**self.operator).to(self.device)

    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the prior's images: what `--resize` brings images to."""
        size = self.prior.image_size
        if size is None:
            raise ValueError("this prior has no native image size; give the size of the images to restore")
        return (self.prior.image_channels, size, size)

    def describe(self) -> dict[str, Any]:
        """The resolved settings as plain values (tensors by their shape), for config.yaml."""
        def plain(values: dict[str, Any]) -> dict[str, Any]:
            return {k: f"tensor{tuple(v.shape)}" if isinstance(v, Tensor) else v for k, v in values.items()}

        settings = plain(self.settings)
        if self.reference_file:
            settings["reference"] = self.reference_file
        return {"model": self.model_name, "operator": plain(self.operator), "sampler": self.sampler,
                "sampler_settings": settings, "recommended_by_the_prior": dict(self.recommended), "tiling": self.tiling}

    def setting_rows(self) -> dict[str, dict[str, Any]]:
        """{setting: its value in each layer that sets it ({layer name: value}, see `spgd.tasks.LAYERS`),
        the resolved value ("value") and the layer it comes from ("from")}."""
        rows = {}
        for key, value in self.settings.items():
            row = {name: layer[key] for name, layer in self.layers.items() if key in layer}
            value = f"tensor{tuple(value.shape)}" if isinstance(value, Tensor) else value
            rows[key] = {**row, "value": value, "from": next(n for n in reversed(self.layers) if key in self.layers[n])}
        return rows


def make_spec(prior: Denoiser | None, task: str | Path, sampler: str = "spgd", operator: dict[str, Any] | None = None,
              settings: dict[str, Any] | None = None, *, mask: Path | None = None, kernel: Path | None = None,
              reference: Path | None = None, device: str = "cpu", model_name: str = "",
              own_size: bool = False, tiling: str = "blend") -> RunSpec:
    """The resolved run of a task preset (name or YAML file): operator parameters (preset < `operator` <
    a mask or kernel file) and sampler settings (defaults < preset < the prior's recommended <
    `settings`), each checked against what the operator or sampler accepts; `layers` keeps each layer.
    `reference`: an image file for a sampler that takes one (a `reference` setting), centre-cropped and
    resized to the prior's size. `prior` None: the settings without a model's recommendation (the page's form
    before its model is known). `own_size`: images are restored at their own size (`restored_size`, which
    then checks the mask's size against each image's); else the mask must be of the prior's size. `tiling`:
    how a fixed-size prior covers other sizes ("blend" or "shift", `spgd.restore`)."""
    check_tiling(tiling)
    preset = load_task(task)
    params = {**preset["operator"], **(operator or {})}
    if mask is not None:
        params["mask"] = load_mask(mask, None if own_size else prior.image_size)
    if kernel is not None:
        params["kernel"] = io.load_kernel(kernel)
    recommended = getattr(prior, "recommended", lambda *_: {})(Path(str(task)).stem, sampler)
    layers = setting_layers(sampler, preset, settings, recommended)
    resolved = {key: value for layer in layers.values() for key, value in layer.items()}
    spec = RunSpec(prior=prior, operator=params, sampler=sampler, settings=resolved, device=device,
                   model_name=model_name, recommended=recommended, layers=layers,
                   mask_file=str(mask) if mask is not None else "", own_size=own_size, tiling=tiling)
    if reference is not None:
        if not takes_reference(sampler):
            raise ValueError(f"--reference {reference}: {sampler} takes no reference image (samplers that do: "
                             f"{', '.join(takes_reference())})")
        _, height, width = spec.image_shape()
        image = io.load_image(reference, (height, width), resize=True, role="reference")
        spec.settings["reference"] = to_model_range(image[None]).to(device)
        spec.reference_file = str(reference)
        spec.layers[next(reversed(spec.layers))]["reference"] = spec.reference_file
    return spec


def shown_value(value: Any) -> str:
    """A setting's value as `spgd tasks` and the page show it (floats without trailing zeros)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass
class BatchResult:
    """One batch restored: measurements, restored images and previews ([0, 1], on the CPU), and per image
    the step at which it failed (None if it did not) and why."""

    y: Tensor
    restored: Tensor
    preview: Tensor
    failed_steps: list[int | None] = field(default_factory=list)
    failed_reasons: list[str | None] = field(default_factory=list)


def load_clean(spec: RunSpec, paths: Sequence[Path], resize: bool) -> Tensor:
    """Clean images at the prior's size, as an NCHW [0, 1] RGB batch on the run's device (any alpha dropped)."""
    _, height, width = spec.image_shape()
    return torch.stack([io.load_image(p, (height, width), resize) for p in paths]).to(spec.device)


def restored_size(spec: RunSpec, operator: Operator | None, path: Path, measured: bool,
                  resize: bool) -> tuple[int, int]:
    """(H, W) at which the image of `path` is restored: the prior's size with `resize` or a spec that restores
    at it; else the file's own size, or for a measurement the size of the image behind it (the operator's
    `input_shape`: 4x its sides for 4x SR). Read from the header; a size the operator cannot take, or a mask
    or reference image of another size, is refused with one line naming the file and what to do."""
    if resize or not spec.own_size:
        return spec.image_shape()[1:]
    operator = operator or spec.make_operator()
    height, width = io.image_size(path)
    channels, side = spec.prior.image_channels, spec.prior.image_size
    if measured:
        check_image_measurement(operator)
        height, width = operator.input_shape(torch.empty(1, channels, height, width, device="meta"))[-2:]
    else:
        try:
            operator.measurement_shape((channels, height, width))
        except ValueError as exc:
            hint = (f"pass --resize to restore it at the prior's {side}x{side}, or crop it first"
                    if side and _takes(operator, (channels, side, side)) else "crop it first")
            raise ValueError(f"{path}: {exc}; {hint}") from None
    mask = spec.operator.get("mask")
    if isinstance(mask, Tensor) and tuple(mask.shape[-2:]) != (height, width):
        raise ValueError(f"mask file {spec.mask_file} is {mask.shape[-1]}x{mask.shape[-2]} pixels (WxH), expected "
                         f"{width}x{height}, the size {path} is restored at (a mask is of the image's size)")
    reference = spec.settings.get("reference")
    if isinstance(reference, Tensor) and tuple(reference.shape[-2:]) != (height, width):
        raise ValueError(f"{path} is restored at {width}x{height} and --reference {spec.reference_file} at the "
                         f"prior's {side}x{side}; pass --resize to restore the images at the prior's size")
    return int(height), int(width)


def _takes(operator: Operator, shape: tuple[int, int, int]) -> bool:
    """Whether the operator measures images of `shape` (C, H, W)."""
    try:
        operator.measurement_shape(shape)
    except ValueError:
        return False
    return True


def read_clean(spec: RunSpec, operator: Operator, paths: Sequence[Path], resize: bool,
               size: tuple[int, int] | None = None) -> tuple[Tensor, list[io.InputImage]]:
    """Clean images at `size` (H, W; default: the prior's) as an NCHW [0, 1] batch on the run's device, and
    each file's `InputImage`; their transparent pixels are left out by `operator` (`mark_transparent`)."""
    height, width = size or spec.image_shape()[1:]
    images = [io.read_image(p, (height, width), resize) for p in paths]
    mark_transparent(operator, images, paths)
    return torch.stack([image.pixels for image in images]).to(spec.device), images


def load_measured(spec: RunSpec, operator: Operator, paths: Sequence[Path], resize: bool,
                  size: tuple[int, int] | None = None) -> tuple[Tensor, list[io.InputImage]]:
    """Measured image files as measurements y in [-1, 1] of images of `size` (H, W; default: the prior's),
    checked against what the operator produces, and each file's `InputImage`. Transparent pixels are unknown
    (`mark_transparent`): with an operator that takes unknown pixels, they stand in for a mask not given."""
    check_image_measurement(operator)
    _, height, width = operator.measurement_shape((spec.prior.image_channels, *size) if size else spec.image_shape())
    images = [io.read_image(p, (height, width), resize, role="measurement") for p in paths]
    missing = operator.unset_parameters()
    if missing and not (operator.supports("unknown_pixels") and all(i.transparent() is not None for i in images)):
        raise ValueError(f"{operator.name}: a measured image needs its {' and '.join(missing)} "
                         f"(--{' and --'.join(missing)}), or use --simulate with clean images")
    mark_transparent(operator, images, paths)
    pixels = torch.stack([image.pixels for image in images])
    return operator.as_measurement(to_model_range(pixels).to(spec.device)), images


def check_image_measurement(operator: Operator) -> None:
    """A one-line error unless the operator's measurements are images (a file can hold them)."""
    if not operator.image_measurement:
        raise ValueError(f"task {operator.name}: measurements are not images; use --simulate with clean images")


def mark_transparent(operator: Operator, images: Sequence[io.InputImage], paths: Sequence[Path]) -> None:
    """The inputs' transparent pixels are unknown: an operator that can leave pixels out gets them (on top of
    its mask, given or drawn); any other refuses the image, with one line."""
    transparent = [image.transparent() for image in images]
    if all(t is None for t in transparent):
        return
    if not operator.supports("unknown_pixels"):
        k = next(k for k, t in enumerate(transparent) if t is not None)
        raise io.ImageError(f"{paths[k]}: {int(transparent[k].sum())} transparent pixel(s) (alpha below "
                            f"{io.TRANSPARENT_BELOW} of 255), which the {operator.name} operator cannot leave out "
                            "as unknown; remove the transparency (flatten the image) or use an inpainting task")
    operator.mark_unknown(torch.stack([t if t is not None else torch.zeros_like(image.pixels[:1], dtype=torch.bool)
                                       for t, image in zip(transparent, images)]))


def restore_batch(spec: RunSpec, seeds: list[int], clean: Tensor | None = None, measured: Tensor | None = None,
                  operator: Operator | None = None, trace: Trace | None = None,
                  progress: bool = True, keep_measured: bool = False) -> BatchResult:
    """Restore one batch: simulate the measurement of `clean` ([0, 1]) with `seeds`, or take `measured` y;
    `keep_measured` puts the pixels y measures directly back into the result (`spgd.restore`).

    A diverging image does not stop the others: it is reported in `failed_steps` (and comes back NaN).
    """
    if (clean is None) == (measured is None):
        raise ValueError("restore_batch takes clean images or measurements, not both or neither")
    operator = operator or spec.make_operator()
    y = simulate(clean, operator, seeds) if clean is not None else measured
    trace = trace or Trace(keep_images=False, curves=False)
    restored = restore(y, operator, spec.prior, sampler=spec.sampler, seed=seeds, keep_measured=keep_measured,
                       tiling=spec.tiling, **{**spec.settings, "on_nan": "mark", "trace": trace, "progress": progress}).cpu()
    failed = [trace.failed.get(k, -1 if bool(torch.isnan(restored[k]).any()) else None)
              for k in range(len(seeds))]
    reasons = [trace.reasons.get(k, "NaN result") if step is not None else None for k, step in enumerate(failed)]
    return BatchResult(y, restored, operator.preview(y).cpu(), failed, reasons)
