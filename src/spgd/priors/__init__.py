"""Denoisers D(x, sigma): the only thing samplers see, from any checkpoint format (see `loaders`)."""
from .adm_unet import ADMConfig, ADMUNet
from .edm import EDMDenoiser
from .errors import CheckpointError
from .fast import FastDenoiser
from .hub import PUBLIC_CHECKPOINTS, fetch_checkpoint
from .loaders import build_network, builtin_priors, load_network, load_prior
from .presets import ARCHITECTURES
from .vp import VPDenoiser
from .wrap import EDM, VE, RectifiedFlow, VPContinuous, VPDiscrete, wrap

__all__ = ["ADMConfig", "ADMUNet", "ARCHITECTURES", "CheckpointError", "EDM", "EDMDenoiser", "FastDenoiser",
           "PUBLIC_CHECKPOINTS", "RectifiedFlow", "VE", "VPContinuous", "VPDenoiser", "VPDiscrete", "build_network",
           "builtin_priors", "fetch_checkpoint", "load_network", "load_prior", "wrap"]
