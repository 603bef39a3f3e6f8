"""The restoration methods a request names (`--sampler`): the posterior samplers, which restore with a
diffusion prior, and the trained restorers, which are their own model: DiffIR (weights trained here) and
"network" (a person's own restoration network, loaded by spandrel: `spgd.networks`).

This is the one place that knows the difference. It answers what a method's settings are, whether a loaded
model serves it, which model it loads (a file, or the built-in one for the task and the clean-image size),
and builds the `spgd.protocols.Restorer` the apps run. The apps ask these questions and never the kind.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .protocols import Operator, Restorer
from .samplers import SAMPLERS, check_values, sampler_settings

TRAINED = ("diffir", "network")  # methods that are a trained restorer: the model is the method
METHODS = sorted([*SAMPLERS, *TRAINED])


def _diffir() -> Any:
    from .diffir import model

    return model


def _trained(name: str) -> Any:
    """The module of trained method `name`: its SETTINGS and its loader."""
    if name == "diffir":
        return _diffir()
    from . import networks

    return networks


def _load_trained(name: str, source: str | Path, device: str = "cpu") -> Any:
    return _diffir().load_diffir(source, device) if name == "diffir" else _trained(name).load_network(source, device)


def trained_method(source: str | Path | None) -> str | None:
    """The trained method a model file (or builtin name) is for: "diffir", "network", or None (a diffusion
    prior's checkpoint, or a name `spgd.priors.load_prior` resolves)."""
    if source is None:
        return None
    if str(source).startswith("builtin:diffir-") or _diffir().is_diffir_file(source):
        return "diffir"
    if not str(source).startswith("builtin:") and _trained("network").is_network_file(source):
        return "network"
    return None


def check_method(name: str) -> None:
    if name not in METHODS:
        raise ValueError(f"unknown sampler {name!r}; samplers: {', '.join(METHODS)}")


def method_settings(name: str) -> dict[str, Any]:
    """The settings of method `name` and their defaults."""
    check_method(name)
    return dict(_trained(name).SETTINGS) if name in TRAINED else sampler_settings(name)


def check_settings(name: str, settings: dict[str, Any], source: str = "settings") -> None:
    """A ValueError for a key that is not a setting of method `name` (listing its settings) or a value of the
    wrong kind (`spgd.samplers.check_values`)."""
    check_values(name, method_settings(name), settings, source)


def takes_reference(name: str | None = None) -> Any:
    """Whether method `name` takes a reference image (a `reference` setting); without a name, those that do."""
    if name is None:
        return [n for n in METHODS if "reference" in method_settings(n)]
    return "reference" in method_settings(name)


def is_trained_file(source: str | Path | None) -> bool:
    """Whether a model file holds a trained restorer's weights (else: a diffusion prior's checkpoint, or a name
    `spgd.priors.load_prior` resolves)."""
    return trained_method(source) is not None


def default_method(named: list[str], model: str | Path | None = None) -> str:
    """The method a task runs when none is given: the first of `named` (its preset's, best first:
    `spgd.tasks.preset_methods`) that takes `model` (a file or builtin name; None: the built-in models), else
    the trained method of trained weights and SPGD for a prior."""
    if model is None:
        return named[0]
    trained = trained_method(model)
    return next((n for n in named if n == trained or (trained is None and n not in TRAINED)), trained or "spgd")


def serves(name: str, model: Any) -> bool:
    """Whether a loaded model restores with method `name`: a trained restorer serves its own method, a prior
    every posterior sampler."""
    if isinstance(model, _diffir().DiffIRModel):
        return name == "diffir"
    if isinstance(model, _trained("network").NetworkRestorer):
        return name == "network"
    return name not in TRAINED


def load_file(source: str | Path, arch: Any = None, device: str = "cpu") -> Any:
    """A model file (or builtin: name) as what it holds: a trained restorer or a diffusion prior."""
    trained = trained_method(source)
    if trained is not None:
        return _load_trained(trained, source, device)
    from .priors import load_prior

    return load_prior(source, arch, device=device)


def load_model(name: str, source: str | Path, arch: Any = None, device: str = "cpu") -> Any:
    """The model file `source` for method `name`; one of the other kind is a ValueError that says which method
    takes it."""
    check_method(name)
    if name in TRAINED:
        return _load_trained(name, source, device)
    trained = trained_method(source)
    if trained is not None:
        raise ValueError(f"{source} is a {trained} weight file, not a diffusion prior: use it with --sampler {trained}")
    from .priors import load_prior

    return load_prior(source, arch, device=device)


def choose_builtin(name: str, task: str | Path, operator: Operator, size: tuple[int, int] | None,
                   resize: bool) -> tuple[str, str]:
    """The built-in model method `name` runs for `task` and clean images of `size` (H, W), and why: a prior by
    the size (`spgd.priors.loaders.choose_builtin_prior`), trained weights by the task's operator and the
    size (`spgd.diffir.model.choose_builtin`, which refuses images outside their domain)."""
    check_method(name)
    if name == "network":
        raise ValueError("--sampler network restores with a network file of your own: give it with --model FILE")
    if name in TRAINED:
        return _diffir().choose_builtin(operator, size, resize)
    from .priors.loaders import choose_builtin_prior

    return choose_builtin_prior(size, resize)


def load_builtin(name: str, builtin: str, why: str, device: str = "cpu", cache: dict[str, Any] | None = None) -> Any:
    """The built-in model `builtin` (chosen for `why`), loaded once per name into `cache`."""
    if cache is not None and builtin in cache:
        return cache[builtin]
    if name in TRAINED:
        model = _diffir().load_diffir(builtin, device)
        model.chosen = why
    else:
        from .priors import load_prior

        model = load_prior(builtin, device=device)
        model.name = builtin
        model.description = f"{model.description}; {why}"
    if cache is not None:
        cache[builtin] = model
    return model


def builtin_model(name: str, task: str | Path, operator: Operator, size: tuple[int, int] | None, resize: bool = False,
                  device: str = "cpu", cache: dict[str, Any] | None = None) -> Any:
    """The built-in model `choose_builtin` picks, loaded (once per name, with `cache`); its name is `name`
    and its description says why it was chosen."""
    builtin, why = choose_builtin(name, task, operator, size, resize)
    return load_builtin(name, builtin, why, device, cache)


def recommended(model: Any, task: str | Path, name: str) -> dict[str, Any]:
    """The settings the model recommends for this task and method (a prior's `recommended`; none for a trained
    restorer)."""
    if name in TRAINED:
        return {}
    return getattr(model, "recommended", lambda *_: {})(Path(str(task)).stem, name)


def build_restorer(name: str, model: Any, settings: dict[str, Any], tiling: str = "blend") -> Restorer:
    """The Restorer of method `name` with `model` and its resolved `settings`."""
    if name in TRAINED:
        return model.configured(settings)
    from .restorers import PosteriorRestorer

    return PosteriorRestorer(model, name, settings, tiling)


def with_precision(name: str, model: Any, shown: str, precision: str = "fp32", compile: bool = False) -> tuple[Any, str]:
    """A prior on the fast path (`spgd.priors.fast.FastDenoiser`: autocast to `precision`, channels-last,
    optionally compiled) and the name that records it; a trained restorer and fp32 uncompiled as they are."""
    if name in TRAINED or (precision == "fp32" and not compile):
        return model, shown
    from .priors.fast import FastDenoiser

    fast = FastDenoiser(model, precision, channels_last=True, compile=compile)
    return fast, f"{shown} ({precision}{', compiled' if compile else ''})"
