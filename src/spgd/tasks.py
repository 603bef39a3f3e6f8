"""Task presets (YAML in spgd/configs): the operator and only the sampler settings a task changes.

A run's settings resolve in layers, each over the one before: the method's defaults (a sampler's
signature), the task preset's section for that method, the prior's recommended settings (a small
prior may need others), then the user's overrides (`setting_layers`; `spgd.run.make_spec` merges them
into the resolved set every run writes to its config.yaml).
"""
from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from .methods import check_settings, method_settings


def task_names() -> list[str]:
    """Names of the packaged task presets."""
    return sorted(p.name[:-5] for p in resources.files("spgd.configs").iterdir() if p.name.endswith(".yaml"))


def default_task() -> str:
    """The preset a form starts with: the one marked `default: true` (the README's first command's task)."""
    marked = [name for name in task_names() if load_task(name).get("default") is True]
    if len(marked) != 1:
        raise RuntimeError(f"exactly one task preset must be marked default: true, found {marked}")
    return marked[0]


def preset_methods(task: str | Path) -> list[str]:
    """The methods a task's preset names for when none is given (its `sampler`: one name or a list, best
    first); none named: SPGD."""
    named = load_task(task).get("sampler", "spgd")
    return [named] if isinstance(named, str) else [str(n) for n in named]


def load_task(name_or_path: str | Path) -> dict[str, Any]:
    """A task preset by name (see `task_names()`) or from a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ValueError(f"task file not found: {path}")
        text = path.read_text()
    else:
        if str(name_or_path) not in task_names():
            raise ValueError(f"unknown task {name_or_path!r}; tasks: {', '.join(task_names())} (or a .yaml file)")
        text = resources.files("spgd.configs").joinpath(f"{name_or_path}.yaml").read_text()
    task = yaml.safe_load(text)
    if not isinstance(task, dict) or not isinstance(task.get("operator"), dict) or "name" not in task["operator"]:
        raise ValueError(f"task {name_or_path}: a task preset needs an 'operator' section with a 'name'")
    return task


def preset_settings(task: Mapping[str, Any], sampler: str) -> dict[str, Any]:
    """The preset's settings for `sampler` (empty when the task changes none of its defaults)."""
    return copy.deepcopy(dict(task.get(sampler) or {}))


LAYERS = ("sampler default", "task preset", "prior's recommendation", "passed by you")


def setting_layers(sampler: str, task: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                   recommended: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The layers a run's settings resolve from, in order, each over the one before: {layer name (see
    `LAYERS`): the settings it sets}. The first holds every setting of `sampler`; the others only what
    they change (integers cast as the defaults are). Keys a sampler does not have are a ValueError that
    lists the ones it has."""
    defaults = method_settings(sampler)
    layers = {LAYERS[0]: dict(defaults)}
    for name, source, layer in ((LAYERS[1], "the task preset", preset_settings(task, sampler)),
                                (LAYERS[2], "the prior's recommended settings", dict(recommended or {})),
                                (LAYERS[3], "the overrides", dict(overrides or {}))):
        check_settings(sampler, layer, source)
        layers[name] = {k: int(v) if type(defaults[k]) is int else v for k, v in layer.items()}
    return layers


def parse_key_values(items: Sequence[str], flag: str = "--set") -> dict[str, Any]:
    """Command-line overrides ["lr=3.0", "inner-steps=2"] -> {"lr": 3.0, "inner_steps": 2}; values are
    read as YAML (numbers, booleans, lists), and numbers YAML leaves as text ("1e-4") as floats;
    anything else stays a string. A key given twice is an error."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} expects key=value, got {item!r}")
        value = yaml.safe_load(text)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        key = key.strip().replace("-", "_")
        if key in out:
            raise ValueError(f"{flag}: {key} is given twice ({out[key]!r} and {value!r})")
        out[key] = value
    return out
