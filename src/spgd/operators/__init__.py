"""Forward models of the restoration tasks, and `make_operator` to build one by name.

`make_operator(**op.params())` rebuilds an operator exactly (drawn masks and kernels included).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from .base import Operator, as_generators, randn_like_per_image
from .blind_blur import BlindBlur
from .denoising import Denoising
from .blur import Blur, GaussianBlur, MotionBlur, gaussian_kernel
from .hdr import HighDynamicRange
from .inpainting import Inpainting, load_mask
from .jpeg import Jpeg
from .real_world import RealWorldSR
from .super_resolution_jpeg import SuperResolutionJpeg
from .phase_retrieval import PhaseRetrieval
from .super_resolution import SuperResolution


def _nonlinear_blur() -> type[Operator]:
    from .nonlinear_blur import (
        NonlinearBlur,  # on demand: the other operators never depend on it
    )

    return NonlinearBlur


_FACTORIES: dict[str, Callable[[], type[Operator]]] = {
    "super_resolution": lambda: SuperResolution,
    "inpainting": lambda: Inpainting,
    "blur": lambda: Blur,
    "gaussian_blur": lambda: GaussianBlur,
    "motion_blur": lambda: MotionBlur,
    "blind_deblur": lambda: BlindBlur,
    "phase_retrieval": lambda: PhaseRetrieval,
    "hdr": lambda: HighDynamicRange,
    "denoising": lambda: Denoising,
    "jpeg": lambda: Jpeg,
    "super_resolution_jpeg": lambda: SuperResolutionJpeg,
    "real_sr": lambda: RealWorldSR,
    "nonlinear_blur": _nonlinear_blur,
}
_ALIASES = {"down_sampling": "super_resolution", "high_dynamic_range": "hdr"}


def operator_class(name: str) -> type[Operator]:
    """The class registered as `name` (or an alias)."""
    key = _ALIASES.get(name, name)
    if key not in _FACTORIES:
        raise ValueError(f"unknown operator {name!r}; known operators: {', '.join(operator_names())}")
    return _FACTORIES[key]()


def operator_names() -> list[str]:
    """Every name `make_operator` accepts, aliases included."""
    return sorted([*_FACTORIES, *_ALIASES])


def make_operator(name: str, **params: Any) -> Operator:
    """Build the operator registered as `name` (or an alias) with the given parameters."""
    return check_parameters(name, params)(**params)


def check_parameters(name: str, params: dict[str, Any], complete: bool = True) -> type[Operator]:
    """The class of operator `name`, once `params` are known to be ones it takes (a ValueError naming the
    unknown ones, with what it accepts, and with `complete` the missing ones); nothing is built."""
    key = _ALIASES.get(name, name)
    cls = operator_class(name)
    signature = inspect.signature(cls.__init__)
    accepted = [p for p in signature.parameters if p != "self"]
    missing = [p.name for p in signature.parameters.values()
               if p.name != "self" and p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in params]
    if missing and complete:
        hints = getattr(cls, "required", {})
        raise ValueError(f"operator {key!r} needs " + "; ".join(f"{name}: {hints.get(name, 'no default')}"
                                                                for name in missing))
    if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(
                f"operator {key!r} got unknown parameter(s) {', '.join(map(repr, unknown))}; "
                f"accepted: {', '.join(accepted)}"
            )
    return cls


__all__ = [
    "BlindBlur",
    "Blur",
    "Denoising",
    "GaussianBlur",
    "HighDynamicRange",
    "Inpainting",
    "Jpeg",
    "MotionBlur",
    "Operator",
    "PhaseRetrieval",
    "SuperResolution",
    "as_generators",
    "gaussian_kernel",
    "load_mask",
    "check_parameters",
    "make_operator",
    "operator_class",
    "operator_names",
    "randn_like_per_image",
]
