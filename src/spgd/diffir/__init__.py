"""DiffIR (Xia et al., ICCV 2023): a supervised restorer whose diffusion runs on a compact prior vector.

A room of its own: `network` (DIRformer, CPEN, the IPR denoiser and schedule), `train` (the two stages),
`model` (a weight file as the restorer `--sampler diffir` runs).
"""
from .model import DiffIRModel, is_diffir_file, load_diffir
from .network import DiffIRConfig, DiffIRS1, DiffIRS2

__all__ = ["DiffIRConfig", "DiffIRModel", "DiffIRS1", "DiffIRS2", "is_diffir_file", "load_diffir"]
