"""The form's answers, as pure functions of what the visitor chose: which models a method may use, and what
the form shows for a task (the inputs its operator takes, and the settings the plan resolves for the model
that will actually run on the uploaded image)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .. import io, methods
from ..api import to_model_range
from ..plan import Request, make_plan
from ..run import RunSpec, make_spec, shown_value
from ..tasks import LAYERS, load_task
from .files import USER_ERRORS, PageError, check_task

BUILTIN = "built-in (chosen by the task and the image's size)"  # the planner's choice for each image
SIMULATE = "Degrade this clean image first (simulate, then score it)"
MEASURED = "This is already the measurement"


def model_choices(models: Mapping[str, Any], sampler: str, offer_builtin: bool) -> list[str]:
    """The models a visitor may choose for `sampler`: the offered ones that serve it, and with `offer_builtin`
    the built-in model the planner chooses for each image (`BUILTIN`), first."""
    offered = [label for label, model in models.items() if methods.serves(sampler, model)]
    return [BUILTIN, *offered] if offer_builtin else offered


def request_model(models: Mapping[str, Any], sampler: str, label: str | None, offer_builtin: bool) -> str | None:
    """The request's model for the chosen label: None for `BUILTIN`, else the label of an offered model that
    serves `sampler`; anything else a PageError naming the choices."""
    choices = model_choices(models, sampler, offer_builtin)
    if label == BUILTIN and offer_builtin:
        return None
    if label in choices:
        return label
    what = f"cannot restore with {sampler}" if label in models else "is not offered here"
    raise PageError(f"model {label!r} {what}; {sampler} restores with: {', '.join(choices) or 'none on this server'}")


def form_spec(models: Mapping[str, Any], cache: dict[str, Any], task: str, sampler: str, label: str | None,
              offer_builtin: bool, image: str | Path | None = None, measured: bool = False,
              resize: bool = False, device: str = "cpu") -> RunSpec:
    """The resolved run the form describes: the plan's for the uploaded image, or without one that of the
    chosen model (for `BUILTIN`, the one chosen for an image resized to a built-in's size)."""
    model = request_model(models, sampler, label, offer_builtin)
    if image is not None:
        request = Request(task=task, sampler=sampler, model=model, simulate=not measured, resize=resize, device=device)
        return make_plan(request, [Path(image)], cache).groups[0].spec
    if model is None:
        operator = make_spec(None, task, sampler).make_operator()
        name, why = methods.choose_builtin(sampler, task, operator, None, True)
        loaded, model = methods.load_builtin(sampler, name, why, device, cache), name
    else:
        loaded = models[model]
    return make_spec(loaded, task, sampler, model_name=model, device=device)


def task_form(models: Mapping[str, Any], cache: dict[str, Any], task: str, sampler: str, label: str | None,
              offer_builtin: bool, image: str | Path | None = None, measured: bool = False,
              resize: bool = False, device: str = "cpu") -> dict[str, Any]:
    """What the form shows: whether the operator takes a mask and/or a kernel (`file_parameters`), whether its
    measurements are images, the steps and learning rate a restore runs with and the layer each comes from (as
    `spgd tasks TASK` shows them), whether the method takes a reference image, and a note naming every
    setting not at the method's default, the model that runs (or why none can) and, for a measured upload,
    what the restore will estimate from it (a denoising photo's noise level)."""
    check_task(task)
    form: dict[str, Any] = {"mask": False, "kernel": False, "measured": True, "required": False, "steps": None,
                            "lr": None, "steps_from": None, "lr_from": None, "has_lr": False,
                            "reference": methods.takes_reference(sampler)}
    description = load_task(task).get("description", "")
    try:
        spec = form_spec(models, cache, task, sampler, label, offer_builtin, image, measured, resize, device)
        operator = spec.make_operator()
        spec.restorer.check(operator)  # trained weights for another task
    except (PageError, *USER_ERRORS) as exc:
        fallback = make_spec(None, task, sampler)
        form.update(_settings(fallback), note=f"{description}. {_runs_with(fallback, sampler)}. "
                                              f"This task cannot run here: {exc}")
        return form
    note = f"{description}. {_runs_with(spec, sampler)}. Model: {spec.model.description}"
    if label == BUILTIN and image is None:
        note += ". The built-in model is chosen by the image: upload one to see which, and its settings"
    if image is not None and measured and operator.measured_parameters:  # what the restore will estimate
        found = operator.fit_to_measurement(to_model_range(io.load_image(image)[None]), [Path(image)])
        if found:
            note += ". From the image: " + ", ".join(f"{k} {v}" for k, v in found.items())
    missing = operator.unset_parameters()
    if missing:
        note += (f". A measurement needs its {' and '.join(missing)} (give it below); when simulating, an unset "
                 "one is drawn from the seed")
    if not operator.image_measurement:
        note += ". Its measurements are not images: simulate from a clean image"
    form.update(_settings(spec), mask="mask" in operator.file_parameters, kernel="kernel" in operator.file_parameters,
                measured=operator.image_measurement, required=bool(missing), note=note)
    return form


def _settings(spec: RunSpec) -> dict[str, Any]:
    rows = spec.setting_rows()
    return {"steps": spec.settings.get("steps"), "lr": spec.settings.get("lr"), "has_lr": "lr" in spec.settings,
            "steps_from": rows.get("steps", {}).get("from"), "lr_from": rows.get("lr", {}).get("from")}


def _runs_with(spec: RunSpec, sampler: str) -> str:
    """'Runs with steps 25 (task preset); lr 3 (passed by you)', or the method's defaults when none differ."""
    rows, sources = spec.setting_rows(), {}
    for key, row in rows.items():
        sources.setdefault(row["from"], []).append(f"{key} {shown_value(row['value'])}")
    changed = "; ".join(f"{', '.join(keys)} ({source})" for source, keys in sources.items() if source != LAYERS[0])
    defaults = ", ".join(f"{key} {shown_value(row['value'])}" for key, row in rows.items())
    return f"Runs with {changed or f'the defaults of {sampler} ({defaults})'}"
