"""Samplers: one module per algorithm, each a plain loop over the shared sigma schedule.

Every sampler has the signature `sampler(prior, operator, y, x_start=None, seed=0, **params) -> x`.
"""
from __future__ import annotations

from typing import Callable

from .common import DivergenceError, Trace
from .spgd import spgd

SAMPLERS: dict[str, Callable] = {"spgd": spgd}


def get_sampler(name: str) -> Callable:
    """The sampler function registered under `name`."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; samplers: {sorted(SAMPLERS)}")
    return SAMPLERS[name]


__all__ = ["DivergenceError", "SAMPLERS", "Trace", "get_sampler", "spgd"]
