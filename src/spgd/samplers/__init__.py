"""Samplers: one module per algorithm, SPGD and the methods it is compared with (DPS, DAPS, RED-diff, DeqIR).

Every sampler has the signature `sampler(prior, operator, y, x_start=None, seed=0, **params) -> x`.
"""
from __future__ import annotations

from typing import Callable

from .common import DivergenceError, Trace
from .daps import daps
from .deqir import deqir
from .dps import dps
from .reddiff import reddiff
from .spgd import spgd

SAMPLERS: dict[str, Callable] = {"spgd": spgd, "dps": dps, "daps": daps, "reddiff": reddiff, "deqir": deqir}


def get_sampler(name: str) -> Callable:
    """The sampler function registered under `name`."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; samplers: {sorted(SAMPLERS)}")
    return SAMPLERS[name]


__all__ = ["DivergenceError", "SAMPLERS", "Trace", "daps", "deqir", "dps", "get_sampler", "reddiff", "spgd"]
