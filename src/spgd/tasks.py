"""Task presets (YAML in spgd/configs): operator parameters and per-sampler published settings."""
from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import yaml


def task_names() -> list[str]:
    """Names of the packaged task presets."""
    return sorted(p.name[:-5] for p in resources.files("spgd.configs").iterdir() if p.name.endswith(".yaml"))


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
    if not isinstance(task, dict) or "operator" not in task:
        raise ValueError(f"task {name_or_path}: a task preset needs an 'operator' section")
    return task


def sampler_settings(task: dict[str, Any], sampler: str) -> dict[str, Any]:
    """The preset's settings for `sampler` (empty when the preset gives none: the sampler's defaults apply)."""
    return copy.deepcopy(task.get(sampler, {}))


def parse_key_values(items: Sequence[str], flag: str = "--set") -> dict[str, Any]:
    """Command-line overrides ["lr=3.0", "inner-steps=2"] -> {"lr": 3.0, "inner_steps": 2}; values are
    read as YAML (numbers, booleans, lists), and numbers YAML leaves as text ("1e-4") as floats;
    anything else stays a string."""
    out = {}
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
        out[key.strip().replace("-", "_")] = value
    return out
