"""One request -> one plan: the inputs in groups of one restored size, each with the Restorer that runs it.

`Request` is what a person asked for, the same from the command line, the page and `spgd bench`.
`make_plan` reads each input's header once, resolves the operator the request sets (the preset, then the
overrides, once), takes each input's clean size from it (a measurement's through the operator: a 32x32 image
with `--op scale=2` is a 64x64 face), groups the inputs by that size, and gives each group its model: the one
named, or the built-in one for the task and that size (the face prior for 64x64 faces, the natural prior
otherwise; trained weights only inside their domain). Each distinct model is loaded once, and its settings
resolved once (`spgd.run.make_spec`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from . import io, methods
from .operators import make_operator
from .priors.loaders import FACE_SIZE
from .priors.tiled import check_tiling
from .run import RunSpec, make_spec
from .tasks import load_task


@dataclass
class Request:
    """A restore as asked: the task, the method (`--sampler`) and its model, and the overrides."""

    task: str | Path
    sampler: str = "spgd"
    model: str | None = None  # a model file or builtin:<name>; None: the built-in one for each group
    arch: str | None = None
    operator: dict[str, Any] = field(default_factory=dict)  # operator parameters over the preset's
    settings: dict[str, Any] = field(default_factory=dict)  # method settings over the preset's and the model's
    mask: Path | None = None
    kernel: Path | None = None
    reference: Path | None = None
    simulate: bool = False  # the inputs are clean images, degraded here
    resize: bool = False  # bring every image to the model's size instead of restoring it at its own
    tiling: str = "blend"
    device: str = "cpu"
    precision: str = "fp32"
    compile: bool = False


@dataclass
class Group:
    """Inputs (by index) restored at one size (H, W) with one resolved run."""

    indices: list[int]
    size: tuple[int, int]
    spec: RunSpec


@dataclass
class Plan:
    request: Request
    inputs: list[Path]
    groups: list[Group]
    skipped: dict[int, str] = field(default_factory=dict)  # inputs left out (`make_plan`'s skip_unreadable)

    def group_of(self, index: int) -> Group:
        return next(group for group in self.groups if index in group.indices)

    @property
    def specs(self) -> list[RunSpec]:
        """The distinct resolved runs, in the order their groups come."""
        return list({id(group.spec): group.spec for group in self.groups}.values())

    def describe(self) -> dict[str, Any]:
        """The resolved runs for config.yaml: one run's keys as they are; several (or none: every input
        skipped) as "groups" with their images, under the models' names and the method."""
        specs = self.specs
        if len(specs) == 1:
            return specs[0].describe()
        return {"model": ", ".join(spec.model_name for spec in specs) or str(self.request.model or "built-in"),
                "sampler": self.request.sampler,
                "groups": [{"images": [self.inputs[i].name for g in self.groups if g.spec is spec for i in g.indices],
                            **spec.describe()} for spec in specs]}


def operator_params(request: Request) -> dict[str, Any]:
    """The operator the request sets: the task preset's parameters under the request's overrides."""
    return {**load_task(request.task)["operator"], **request.operator}


def make_plan(request: Request, inputs: Sequence[Path], cache: dict[str, Any] | None = None,
              skip_unreadable: bool = False) -> Plan:
    """The plan of `request` for these inputs (see the module). `cache`: built-in models loaded before, by name
    (the page keeps one); those loaded here are added. Bad inputs, sizes the operator cannot take and models
    outside their domain are ValueErrors of one line naming the file; with `skip_unreadable` an image file
    that cannot be read is left out instead (`Plan.skipped`, as `spgd bench` does)."""
    check_tiling(request.tiling)
    methods.check_method(request.sampler)
    inputs = [Path(p) for p in inputs]
    probe = make_operator(**operator_params(request))  # random parameters stay undrawn: shapes only
    models: dict[str, tuple[Any, str]] = {}
    named = _named_model(request, models, cache) if request.model is not None else None
    if request.resize:
        name = named or _builtin(request, probe, None, models, cache)
        side = models[name][0].image_size
        if side is None:
            raise ValueError(f"--resize: {name} has no native image size; restore the images at their own size")
        sizes: dict[int, tuple[int, int]] = {index: (side, side) for index in range(len(inputs))}
    else:
        sizes, skipped = {}, {}
        side = models[named][0].image_size if named else FACE_SIZE  # what --resize would bring images to
        for index, path in enumerate(inputs):
            try:
                sizes[index] = _clean_size(request, probe, path, side)
            except io.ImageError as exc:
                if not skip_unreadable:
                    raise
                skipped[index] = str(exc)
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, size in sizes.items():
        by_size.setdefault(size, []).append(index)
    specs: dict[str, RunSpec] = {}
    groups = []
    for size, indices in by_size.items():
        name = named or _builtin(request, probe, size, models, cache)
        if name not in specs:
            model, shown = models[name]
            specs[name] = make_spec(model, request.task, request.sampler, request.operator, request.settings,
                                    mask=request.mask, kernel=request.kernel, reference=request.reference,
                                    device=request.device, model_name=shown, own_size=not request.resize,
                                    tiling=request.tiling, measured=not request.simulate)
        _check_group(specs[name], size, inputs[indices[0]])
        groups.append(Group(indices, size, specs[name]))
    return Plan(request, inputs, groups, {} if request.resize else skipped)


def _named_model(request: Request, models: dict[str, tuple[Any, str]], cache: dict[str, Any] | None) -> str:
    """The model the request names: loaded before (`cache`, by name) or now."""
    name = str(request.model)
    model = cache.get(name) if cache is not None else None
    if model is None:
        model = methods.load_model(request.sampler, name, request.arch, request.device)
    elif not methods.serves(request.sampler, model):
        raise ValueError(f"model {name!r} does not restore with {request.sampler}")
    models[name] = _fast(request, model, name)
    return name


def _builtin(request: Request, probe: Any, size: tuple[int, int] | None, models: dict[str, tuple[Any, str]],
             cache: dict[str, Any] | None) -> str:
    name, why = methods.choose_builtin(request.sampler, request.task, probe, size, request.resize)
    if name not in models:
        model = methods.load_builtin(request.sampler, name, why, request.device, cache)
        models[name] = _fast(request, model, name)
    return name


def _fast(request: Request, model: Any, name: str) -> tuple[Any, str]:
    """The model on the fast path the request asks for, and the name that records how it runs."""
    return methods.with_precision(request.sampler, model, name, request.precision, request.compile)


def _clean_size(request: Request, probe: Any, path: Path, side: int | None) -> tuple[int, int]:
    """(H, W) of the clean image behind an input, from its header: a clean input's own size, a measurement's
    through the operator (4x its sides for 4x SR); a size the operator cannot take is refused, suggesting
    --resize where the model's size (`side`) is one it takes."""
    height, width = io.image_size(path)
    channels = 3
    if not request.simulate:
        if not probe.image_measurement:
            raise ValueError(f"task {probe.name}: measurements are not images; use --simulate with clean images")
        height, width = probe.input_shape(torch.empty(1, channels, height, width, device="meta"))[-2:]
        return int(height), int(width)
    try:
        probe.measurement_shape((channels, height, width))
    except ValueError as exc:
        hint = (f"pass --resize to restore it at the model's {side}x{side}, or crop it first"
                if side and _takes(probe, (channels, side, side)) else "crop it first")
        raise ValueError(f"{path}: {exc}; {hint}") from None
    return int(height), int(width)


def _takes(operator: Any, shape: tuple[int, int, int]) -> bool:
    """Whether the operator measures images of `shape` (C, H, W)."""
    try:
        operator.measurement_shape(shape)
    except ValueError:
        return False
    return True


def _check_group(spec: RunSpec, size: tuple[int, int], path: Path) -> None:
    """A mask or reference image that does not fit the size the group is restored at: one line."""
    height, width = size
    mask = spec.operator.get("mask")
    if isinstance(mask, torch.Tensor) and tuple(mask.shape[-2:]) != (height, width):
        raise ValueError(f"mask file {spec.mask_file} is {mask.shape[-1]}x{mask.shape[-2]} pixels (WxH), expected "
                         f"{width}x{height}, the size {path} is restored at (a mask is of the image's size)")
    reference = spec.settings.get("reference")
    if isinstance(reference, torch.Tensor) and tuple(reference.shape[-2:]) != (height, width):
        side = spec.model.image_size
        raise ValueError(f"{path} is restored at {width}x{height} and --reference {spec.reference_file} at the "
                         f"model's {side}x{side}; pass --resize to restore the images at the model's size")
