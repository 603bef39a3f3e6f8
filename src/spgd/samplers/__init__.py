"""Samplers: one module per algorithm, SPGD and the methods it is compared with.

Every sampler has the signature `sampler(prior, operator, y, x_start=None, seed=0, **settings) -> x`;
its keyword-only parameters with their defaults are its settings (`sampler_settings`), the one
place sampler defaults live.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from .common import DivergenceError, Trace
from .daps import daps
from .deqir import deqir
from .dps import dps
from .reddiff import reddiff
from .spgd import spgd

SAMPLERS: dict[str, Callable] = {"spgd": spgd, "dps": dps, "daps": daps, "reddiff": reddiff, "deqir": deqir}
RUN_CONTROLS = ("shape", "trace", "progress")  # keyword arguments that steer a call, not the algorithm


def get_sampler(name: str) -> Callable:
    """The sampler function registered under `name`."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; samplers: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]


def sampler_settings(name: str) -> dict[str, Any]:
    """The settings of sampler `name` and their defaults (its keyword-only parameters)."""
    signature = inspect.signature(get_sampler(name))
    return {p.name: p.default for p in signature.parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in RUN_CONTROLS}


def check_settings(name: str, settings: dict[str, Any], source: str = "settings") -> None:
    """A ValueError naming the unknown keys and listing the accepted ones, if any key is not a setting."""
    accepted = sampler_settings(name)
    unknown = [key for key in settings if key not in accepted]
    if unknown:
        raise ValueError(f"{source}: {name} has no setting {', '.join(map(repr, unknown))}; "
                         f"its settings: {', '.join(accepted)}")


__all__ = ["DivergenceError", "SAMPLERS", "Trace", "check_settings", "daps", "deqir", "dps", "get_sampler",
           "reddiff", "sampler_settings", "spgd"]
