"""What a run restores with: a diffusion prior for the posterior samplers, or a trained restorer's weights
(DiffIR) for the sampler that runs one, chosen by the sampler's `model_kind` and, for built-in weights, by
the task and the image size. The apps and `spgd.restore` load models here alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import io
from .operators import make_operator
from .protocols import Operator
from .samplers import model_kind
from .tasks import load_task


def _diffir_loaders() -> tuple[Any, Any, Any]:
    from .diffir.model import choose_builtin, is_diffir_file, load_diffir

    return load_diffir, choose_builtin, is_diffir_file


# model kind -> (load(source, device), choose_builtin(task, size, resize), is_its_file(path))
TRAINED_RESTORERS = {"diffir": _diffir_loaders}


def file_kind(source: str | Path | None) -> str:
    """What a model file holds: the kind of trained restorer whose weights it is (`TRAINED_RESTORERS`), else
    "prior" (a diffusion prior's checkpoint, or a name `spgd.priors.load_prior` resolves)."""
    return next((kind for kind, loaders in TRAINED_RESTORERS.items() if source is not None and loaders()[2](source)),
                "prior")


def clean_size(task: str | Path, path: str | Path, measured: bool) -> tuple[int, int]:
    """(H, W) of the clean image behind an input file, from its header (a measurement's through the task's
    operator): what the choice of a trained restorer's built-in weights goes by."""
    height, width = io.image_size(path)
    if not measured:
        return height, width
    operator = make_operator(**load_task(task)["operator"])
    return tuple(operator.input_shape(torch.empty(1, 3, height, width))[-2:])


def kind_of(model: Any) -> str:
    """What a loaded model is, in `spgd.samplers.model_kind`'s words: "prior" or a trained restorer's kind."""
    return getattr(model, "model_kind", "prior")


def load_file(source: str | Path, arch: Any = None, device: str = "cpu") -> Any:
    """A model file as what it holds (`file_kind`): a trained restorer's weights or a diffusion prior."""
    kind = file_kind(source)
    if kind == "prior":
        from .priors import load_prior

        return load_prior(source, arch, device=device)
    return TRAINED_RESTORERS[kind]()[0](source, device)


def load_model(source: str | Path | None, sampler: str, task: str | Path | Operator, device: str = "cpu",
               arch: Any = None, image_size: tuple[int, int] | None = None, resize: bool = False,
               cache: dict[str, Any] | None = None) -> Any:
    """The model a run restores with: for the posterior samplers a diffusion prior (`source`, by default the
    built-in prior for clean images of `image_size`: `spgd.priors.loaders.choose_builtin_prior`, the choice
    stated in its `description`); for a sampler that runs a trained restorer (`spgd.samplers.model_kind`), its weight
    file (`source`, by default the built-in one for the task, or the operator, and for clean images of
    `image_size`, the choice stated in its `description`). `cache`: built-in weights loaded before, by name (the web page's); those
    loaded here are added to it."""
    kind = model_kind(sampler)
    if kind == "prior":
        from .priors import load_prior
        from .priors.loaders import choose_builtin_prior

        held = file_kind(source)
        if held != "prior":
            raise ValueError(f"{source} is a {held} weight file, not a diffusion prior: use it with --sampler {held}")
        if source is not None:
            return load_prior(source, arch, device=device)
        name, why = choose_builtin_prior(image_size, resize)
        prior = cache.get(name) if cache is not None else None
        if prior is None:
            prior = load_prior(name, device=device)
            prior.name = name
            prior.description = f"{prior.description}; {why}"
            if cache is not None:
                cache[name] = prior
        return prior
    load, choose, _ = TRAINED_RESTORERS[kind]()
    if source is not None:
        return load(source, device)
    name, why = choose(Path(task).stem if isinstance(task, (str, Path)) else task, image_size, resize)
    model = cache.get(name) if cache is not None else None
    if model is None:
        model = load(name, device)
        model.chosen = why
        if cache is not None:
            cache[name] = model
    return model
