"""Denoisers D(x, sigma): the only thing samplers see."""
from .adm_unet import ADMConfig, ADMUNet
from .fast import FastDenoiser
from .loaders import (
           CheckpointError,
           build_network,
           builtin_priors,
           load_network,
           load_prior,
)
from .presets import ARCHITECTURES
from .vp import VPDenoiser

__all__ = ["ADMConfig", "ADMUNet", "CheckpointError", "FastDenoiser", "ARCHITECTURES", "VPDenoiser",
           "build_network", "builtin_priors", "load_network", "load_prior"]
