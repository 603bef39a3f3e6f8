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
from .protocols import Denoiser
from .samplers import Trace, takes_reference
from .tasks import load_task, resolve_settings


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
    reference_file: str = ""  # the image file of settings["reference"], if any

    def make_operator(self) -> Operator:
        """A fresh operator (random parameters not drawn yet) on the run's device."""
        return make_operator(**self.operator).to(self.device)

    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images the prior restores."""
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
                "sampler_settings": settings, "recommended_by_the_prior": dict(self.recommended)}


def make_spec(prior: Denoiser, task: str | Path, sampler: str = "spgd", operator: dict[str, Any] | None = None,
              settings: dict[str, Any] | None = None, *, mask: Path | None = None, kernel: Path | None = None,
              reference: Path | None = None, device: str = "cpu", model_name: str = "") -> RunSpec:
    """The resolved run of a task preset (name or YAML file): operator parameters (preset < `operator` <
    a mask or kernel file) and sampler settings (defaults < preset < the prior's recommended <
    `settings`), each checked against what the operator or sampler accepts. `reference`: an image file
    for a sampler that takes one (a `reference` setting), centre-cropped and resized to the prior's size."""
    preset = load_task(task)
    params = {**preset["operator"], **(operator or {})}
    if mask is not None:
        params["mask"] = load_mask(mask, prior.image_size)
    if kernel is not None:
        params["kernel"] = io.load_kernel(kernel)
    recommended = getattr(prior, "recommended", lambda *_: {})(Path(str(task)).stem, sampler)
    resolved = resolve_settings(sampler, preset, settings, recommended)
    spec = RunSpec(prior=prior, operator=params, sampler=sampler, settings=resolved, device=device,
                   model_name=model_name, recommended=recommended)
    if reference is not None:
        if not takes_reference(sampler):
            raise ValueError(f"--reference {reference}: {sampler} takes no reference image (samplers that do: "
                             f"{', '.join(takes_reference())})")
        _, height, width = spec.image_shape()
        image = io.load_image(reference, (height, width), resize=True, role="reference")
        spec.settings["reference"] = to_model_range(image[None]).to(device)
        spec.reference_file = str(reference)
    return spec


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
    """Clean images at the prior's size, as an NCHW [0, 1] batch on the run's device."""
    _, height, width = spec.image_shape()
    return torch.stack([io.load_image(p, (height, width), resize) for p in paths]).to(spec.device)


def load_measured(spec: RunSpec, operator: Operator, paths: Sequence[Path], resize: bool) -> Tensor:
    """Measured image files as measurements y in [-1, 1], checked against what the operator produces."""
    if not operator.image_measurement:
        raise ValueError(f"task {operator.name}: measurements are not images; use --simulate with clean images")
    missing = operator.unset_parameters()
    if missing:
        raise ValueError(f"{operator.name}: a measured image needs its {' and '.join(missing)} "
                         f"(--{' and --'.join(missing)}), or use --simulate with clean images")
    _, height, width = operator.measurement_shape(spec.image_shape())
    images = torch.stack([io.load_image(p, (height, width), resize, role="measurement") for p in paths])
    return operator.as_measurement(to_model_range(images).to(spec.device))


def restore_batch(spec: RunSpec, seeds: list[int], clean: Tensor | None = None, measured: Tensor | None = None,
                  operator: Operator | None = None, trace: Trace | None = None,
                  progress: bool = True) -> BatchResult:
    """Restore one batch: simulate the measurement of `clean` ([0, 1]) with `seeds`, or take `measured` y.

    A diverging image does not stop the others: it is reported in `failed_steps` (and comes back NaN).
    """
    if (clean is None) == (measured is None):
        raise ValueError("restore_batch takes clean images or measurements, not both or neither")
    operator = operator or spec.make_operator()
    y = simulate(clean, operator, seeds) if clean is not None else measured
    trace = trace or Trace(keep_images=False, curves=False)
    restored = restore(y, operator, spec.prior, sampler=spec.sampler, seed=seeds,
                       **{**spec.settings, "on_nan": "mark", "trace": trace, "progress": progress}).cpu()
    failed = [trace.failed.get(k, -1 if bool(torch.isnan(restored[k]).any()) else None)
              for k in range(len(seeds))]
    reasons = [trace.reasons.get(k, "NaN result") if step is not None else None for k, step in enumerate(failed)]
    return BatchResult(y, restored, operator.preview(y).cpu(), failed, reasons)
