"""Posterior samplers: one module per algorithm, SPGD and the methods it is compared with.

Every sampler has the signature `sampler(prior, operator, y, x_start=None, seed=0, **settings) -> x`;
its keyword-only parameters with their defaults are its settings (`sampler_settings`), the one
place sampler defaults live. `mean_of` and `antithetic` are settings of every sampler, applied around it:
the restoration is the mean of that many runs, from independent seeds or in antithetic pairs
(`averaging.mean_of_runs`).
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable

from .averaging import mean_of_runs
from .common import DivergenceError, Trace
from .daps import daps
from .ddnm import ddnm, ddnm_plus
from .ddrm import ddrm
from .deqir import deqir
from .diffpir import diffpir
from .dps import dps
from .fast_em import fast_em
from .pigdm import pigdm
from .pnpdm import pnpdm
from .reddiff import reddiff
from .spgd import spgd

SAMPLERS: dict[str, Callable] = {"spgd": spgd, "dps": dps, "daps": daps, "reddiff": reddiff, "deqir": deqir,
                                  "diffpir": diffpir, "ddnm": ddnm, "ddnm_plus": ddnm_plus, "ddrm": ddrm,
                                  "pigdm": pigdm, "pnpdm": pnpdm, "fast_em": fast_em}
RUN_CONTROLS = ("shape", "trace", "progress")  # keyword arguments that steer a call, not the algorithm
# settings of every sampler, applied around it by `mean_of_runs`
COMMON_SETTINGS: dict[str, Any] = {"mean_of": 1, "antithetic": False}


def get_sampler(name: str) -> Callable:
    """The sampler function registered under `name`."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; samplers: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]


def sampler_settings(name: str) -> dict[str, Any]:
    """The settings of sampler `name` and their defaults (its keyword-only parameters)."""
    signature = inspect.signature(get_sampler(name))
    own = {p.name: p.default for p in signature.parameters.values()
           if p.kind is p.KEYWORD_ONLY and p.name not in RUN_CONTROLS}
    return {**own, **COMMON_SETTINGS}


def check_settings(name: str, settings: dict[str, Any], source: str = "settings") -> None:
    """`check_values` against the settings of sampler `name`."""
    check_values(name, sampler_settings(name), settings, source)


def check_values(name: str, accepted: dict[str, Any], settings: dict[str, Any], source: str = "settings") -> None:
    """A ValueError for a key of `settings` that `accepted` (a method's settings and defaults) lacks, listing
    the ones it has, and for a value of the wrong kind: text where the default is a number, NaN or infinity,
    a fraction for a count."""
    unknown = [key for key in settings if key not in accepted]
    if unknown:
        raise ValueError(f"{source}: {name} has no setting {', '.join(map(repr, unknown))}; "
                         f"its settings: {', '.join(accepted)}")
    for key, value in settings.items():
        default = accepted[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{source}: {name}'s {key} must be true or false, got {value!r}")
            continue
        if not isinstance(default, (int, float)):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{source}: {name}'s {key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{source}: {name}'s {key} must be a finite number, got {value}")
        if isinstance(default, int) and value != int(value):
            raise ValueError(f"{source}: {name}'s {key} must be a whole number, got {value}")
        if key in COMMON_SETTINGS and value < 1:
            raise ValueError(f"{source}: {key} must be >= 1, got {value:g}")


__all__ = ["DivergenceError", "SAMPLERS", "Trace", "check_settings", "check_values", "daps", "ddnm", "ddnm_plus",
           "ddrm", "deqir", "diffpir", "dps", "fast_em", "get_sampler", "mean_of_runs", "pigdm", "pnpdm", "reddiff",
           "sampler_settings", "spgd"]
