"""The run layer under `spgd.plan`: one resolved run (`RunSpec`: a model, its method and settings, the
operator), and one batch taken from images to a restored result (make the operator, measure or read the
measurement, restore with the spec's Restorer, preview). The apps around it only read inputs and write files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from . import io, methods
from .api import check_measurement, keep_measured_pixels, refit_on_result, simulate, to_image_range, to_model_range
from .operators import Operator, check_parameters, load_mask, make_operator, operator_class
from .priors.tiled import check_tiling
from .protocols import Restorer
from .samplers import Trace
from .tasks import load_task, setting_layers, task_names


@dataclass
class RunSpec:
    """What determines a run's results: the model, the operator parameters, the method (`sampler`) and its
    resolved settings; `restorer` is what runs them."""

    model: Any  # a diffusion prior, or a trained restorer
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

    @property
    def restorer(self) -> Restorer:
        """The Restorer of this run (`spgd.methods.build_restorer`)."""
        return methods.build_restorer(self.sampler, self.model, self.settings, self.tiling)

    def make_operator(self) -> Operator:
        """A fresh operator (random parameters not drawn yet) on the run's device."""
        return make_operator(**self.operator).to(self.device)

    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the model's images: what `--resize` brings images to."""
        size = self.model.image_size
        if size is None:
            raise ValueError("this model has no native image size; give the size of the images to restore")
        return (self.model.image_channels, size, size)

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


def make_spec(model: Any, task: str | Path, sampler: str = "spgd", operator: dict[str, Any] | None = None,
              settings: dict[str, Any] | None = None, *, mask: Path | None = None, kernel: Path | None = None,
              reference: Path | None = None, device: str = "cpu", model_name: str = "",
              own_size: bool = False, tiling: str = "blend", measured: bool = False) -> RunSpec:
    """The resolved run of a task preset (name or YAML file): operator parameters (preset < `operator` <
    a mask or kernel file) and sampler settings (defaults < preset < the prior's recommended <
    `settings`), each checked against what the operator or sampler accepts; `layers` keeps each layer.
    `reference`: an image file for a sampler that takes one (a `reference` setting), centre-cropped and
    resized to the model's size. `model` None: the settings without a model's recommendation. `own_size`: images are restored at their own size (`restored_size`, which
    then checks the mask's size against each image's); else the mask must be of the prior's size. `tiling`:
    how a fixed-size prior covers other sizes ("blend" or "shift", `spgd.restore`). `measured`: the inputs are
    measurements, so the preset's values of what a measurement tells (the operator's `measured_parameters`,
    e.g. denoising's level) give way to estimates from it, unless `operator` sets them."""
    check_tiling(tiling)
    preset = load_task(task)
    physics = dict(preset["operator"])
    if measured:
        for key in operator_class(physics["name"]).measured_parameters:
            physics.pop(key, None)
        check_assumed(physics, {**(operator or {}), **({"kernel": kernel} if kernel is not None else {})})
    params = {**physics, **(operator or {})}
    if mask is not None:
        params["mask"] = load_mask(mask, None if own_size else model.image_size)
    if kernel is not None:
        params["kernel"] = io.load_kernel(kernel)
    check_parameters(physics["name"], {k: v for k, v in params.items() if k != "name"}, complete=False)  # a mask for SR
    recommended = methods.recommended(model, task, sampler) if model is not None else {}
    layers = setting_layers(sampler, preset, settings, recommended)
    resolved = {key: value for layer in layers.values() for key, value in layer.items()}
    spec = RunSpec(model=model, operator=params, sampler=sampler, settings=resolved, device=device,
                   model_name=model_name, recommended=recommended, layers=layers,
                   mask_file=str(mask) if mask is not None else "", own_size=own_size, tiling=tiling)
    if reference is not None:
        if not methods.takes_reference(sampler):
            raise ValueError(f"--reference {reference}: {sampler} takes no reference image (samplers that do: "
                             f"{', '.join(methods.takes_reference())})")
        _, height, width = spec.image_shape()
        image = io.load_image(reference, (height, width), resize=True, role="reference")
        spec.settings["reference"] = to_model_range(image[None]).to(device)
        spec.reference_file = str(reference)
        spec.layers[next(reversed(spec.layers))]["reference"] = spec.reference_file
    return spec


def check_assumed(preset: dict[str, Any], given: dict[str, Any]) -> None:
    """A one-line error when a measured input would run with what the preset only assumes (the operator's
    `assumed_parameters`, e.g. a blur's width) because the person gave none of them nor a file for them."""
    cls = operator_class(preset["name"])
    if not cls.assumed_parameters or set(given) & {*cls.assumed_parameters, *cls.file_parameters}:
        return
    assumed = ", ".join(f"{key} {preset[key]}" for key in cls.assumed_parameters if key in preset)
    options = [f"--op {key}=..." for key in cls.assumed_parameters] + [f"--{key} FILE" for key in cls.file_parameters]
    blind = [name for name in task_names() if set(cls.file_parameters) & set(
        operator_class(load_task(name)["operator"]["name"]).measured_parameters)]  # tasks that estimate them
    options += [f"-t {name} (estimates the {' and '.join(cls.file_parameters)})" for name in blind]
    raise ValueError(f"{cls.name}: a measured image does not tell its {' and '.join(cls.assumed_parameters)} (the "
                     f"preset's {assumed} are for --simulate); give {' or '.join(options)}")


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
    estimated: dict[str, Any] = field(default_factory=dict)  # operator parameters estimated from the measurement
    # parameters estimated with the image (a blind blur's kernel: {name: one per image}, on the CPU), and the
    # simulated truth they estimate
    refitted: dict[str, Tensor] = field(default_factory=dict)
    truth: dict[str, Tensor] = field(default_factory=dict)


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
    _, height, width = operator.measurement_shape((spec.model.image_channels, *size) if size else spec.image_shape())
    images = [io.read_image(p, (height, width), resize, role="measurement") for p in paths]
    missing = operator.unset_parameters()
    if missing and not (operator.takes_unknown_pixels and all(i.transparent() is not None for i in images)):
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
    if not operator.takes_unknown_pixels:
        k = next(k for k, t in enumerate(transparent) if t is not None)
        raise io.ImageError(f"{paths[k]}: {int(transparent[k].sum())} transparent pixel(s) (alpha below "
                            f"{io.TRANSPARENT_BELOW} of 255), which the {operator.name} operator cannot leave out "
                            "as unknown; remove the transparency (flatten the image) or use an inpainting task")
    operator.mark_unknown(torch.stack([t if t is not None else torch.zeros_like(image.pixels[:1], dtype=torch.bool)
                                       for t, image in zip(transparent, images)]))


def restore_batch(spec: RunSpec, seeds: list[int], clean: Tensor | None = None, measured: Tensor | None = None,
                  operator: Operator | None = None, trace: Trace | None = None, progress: Any = True,
                  keep_measured: bool = False, stop: Callable[[], bool] | None = None,
                  files: Sequence[Path] | None = None, kept_runs: Any = None) -> BatchResult:
    """Restore one batch with the spec's Restorer: simulate the measurement of `clean` ([0, 1]) with `seeds`,
    or take `measured` y (read from `files`, whose coding a JPEG operator reads); `keep_measured` puts the pixels y
    measures directly back into the result (`spgd.api.keep_measured_pixels`). `stop`: the Restorer's stop
    callback; `kept_runs`: the finished runs of a mean of runs, kept across an interruption. Parameters a
    measurement tells and the run was not given are estimated or read first (`fit_to_measurement`, returned
    in `estimated`). Parameters neither tells (a blind blur's kernel) are estimated with the image: a simulated
    truth is forgotten before the restorer runs (`forget_refitted`), a blind method refits them as it goes, and a
    last M-step on the result (`refit`) gives them, returned in `refitted` (with the simulated truth in `truth`).

    A diverging image does not stop the others: it is reported in `failed_steps` (and comes back NaN).
    """
    if (clean is None) == (measured is None):
        raise ValueError("restore_batch takes clean images or measurements, not both or neither")
    operator = operator or spec.make_operator()
    restorer = spec.restorer
    restorer.check(operator)
    y = simulate(clean, operator, seeds) if clean is not None else measured
    estimated = operator.fit_to_measurement(y, files) if clean is None else {}
    check_measurement(y, operator, restorer)
    blind = operator.supports("refit")
    simulated = operator.params() if blind and clean is not None else {}
    if simulated:  # the drawn truth made y; no restorer may run with it
        operator.forget_refitted()
    trace = trace or Trace(keep_images=False, curves=False)
    x = restorer.restore(operator, y, seeds, trace=trace, progress=progress, on_nan="mark", stop=stop,
                         kept_runs=kept_runs)
    refitted = {k: v.detach().cpu() for k, v in refit_on_result(x, y, operator).items()}
    truth = {k: torch.as_tensor(simulated[k]).cpu().expand_as(v) for k, v in refitted.items()
             if simulated.get(k) is not None}
    restored = to_image_range(keep_measured_pixels(x, y, operator) if keep_measured else x).cpu()
    failed = [trace.failed.get(k, -1 if bool(torch.isnan(restored[k]).any()) else None)
              for k in range(len(seeds))]
    reasons = [trace.reasons.get(k, "NaN result") if step is not None else None for k, step in enumerate(failed)]
    return BatchResult(y, restored, operator.preview(y).cpu(), failed, reasons, estimated, refitted, truth)
