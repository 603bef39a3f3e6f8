"""spgd: image restoration with diffusion priors (SPGD and the samplers it is compared with)."""
from .api import restore, simulate, to_image_range, to_model_range
from .operators import make_operator
from .priors import load_prior

__version__ = "0.1.0"
__all__ = ["load_prior", "make_operator", "restore", "simulate", "to_image_range", "to_model_range"]
