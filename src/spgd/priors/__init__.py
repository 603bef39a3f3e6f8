"""Denoisers D(x, sigma): the only thing samplers see."""
from .adm_unet import ADMConfig, ADMUNet
from .fast import FastDenoiser
from .loaders import (
           BUILTIN_PRIORS,
           CheckpointError,
           build_network,
           load_network,
           load_prior,
)
from .presets import PRESETS
from .vp import VPDenoiser

__all__ = ["ADMConfig", "ADMUNet", "BUILTIN_PRIORS", "CheckpointError", "FastDenoiser", "PRESETS", "VPDenoiser",
           "build_network", "load_network", "load_prior"]
