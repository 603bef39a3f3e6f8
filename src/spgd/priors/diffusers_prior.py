"""diffusers checkpoints as priors: a `UNet2DModel` with its DDPM-family scheduler config.

Two folder layouts are read: a model folder (`config.json` of a UNet2DModel, its weights and a
`scheduler_config.json` beside them) and a pipeline folder (`model_index.json`, `unet/`, `scheduler/`),
as `save_pretrained` writes them. The network is built by the diffusers library itself (the optional
extra `pip install 'spgd[diffusers]'`), and so are the scheduler's alphas_cumprod (beta schedules
"linear", "scaled_linear", "squaredcos_cap_v2"). The prior is the VP denoiser of that ladder with the
scheduler's `prediction_type` ("epsilon", "v_prediction", "sample": spgd's "epsilon", "v", "x0"); learned-variance outputs are cut
to the image channels. Noise levels between the ladder's steps reach the network as the fractional
step index, linear in log sigma between the two neighbouring steps (`timestep="interpolate"`, the
continuous inverse of alpha_bar), or as the nearest step (`timestep="nearest"`); outside the ladder the
index is clamped to its ends.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor, nn

from .errors import CheckpointError
from .vp import VPDenoiser

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTIONS = {"epsilon": "epsilon", "v_prediction": "v", "sample": "x0"}  # diffusers' names -> spgd's
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def is_diffusers_folder(path: Path) -> bool:
    """Whether `path` is a folder in one of the two diffusers layouts (see the module docstring)."""
    return path.is_dir() and ((path / "model_index.json").is_file() or (path / "config.json").is_file())


class DiffusersUNet(nn.Module):
    """A diffusers UNet2DModel called as F(x_vp, t) -> output tensor, with the config VPDenoiser reads."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        size = unet.config.sample_size
        self.config = SimpleNamespace(in_channels=int(unet.config.in_channels),
                                      image_size=int(size if isinstance(size, int) else size[0]))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.unet(x, t).sample


def _layout(path: Path) -> tuple[Path, Path]:
    """(UNet folder, scheduler config file) of a diffusers folder; a one-line error naming what is missing."""
    if (path / "model_index.json").is_file():
        unet, scheduler = path / "unet", path / "scheduler" / "scheduler_config.json"
    else:
        unet, scheduler = path, path / "scheduler_config.json"
    for needed in (unet / "config.json", scheduler):
        if not needed.is_file():
            raise CheckpointError(f"{path}: a diffusers folder without {needed.relative_to(path)}")
    if not any((unet / name).is_file() for name in WEIGHT_FILES):
        raise CheckpointError(f"{path}: no weights in {unet.relative_to(path) if unet != path else 'the folder'} "
                              f"(expected {' or '.join(WEIGHT_FILES)})")
    return unet, scheduler


def load_diffusers_prior(path: Path, dtype: torch.dtype = torch.float32, timestep: str = "interpolate") -> VPDenoiser:
    """The VP denoiser of a diffusers UNet2DModel folder (either layout); see the module docstring."""
    try:
        from diffusers import DDPMScheduler, UNet2DModel
    except ImportError:
        raise CheckpointError(f"{path}: a diffusers model; install the extra first: pip install 'spgd[diffusers]'") from None
    unet_dir, scheduler_file = _layout(path)
    config = json.loads((unet_dir / "config.json").read_text())
    if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise CheckpointError(f"{path}: a {config['_class_name']}; spgd's priors are unconditional pixel-space "
                              "UNet2DModel networks")
    scheduler_config = json.loads(scheduler_file.read_text())
    schedule = scheduler_config.get("beta_schedule", "linear")
    if schedule not in BETA_SCHEDULES and scheduler_config.get("trained_betas") is None:
        raise CheckpointError(f"{scheduler_file}: beta_schedule {schedule!r} is not supported; "
                              f"supported: {', '.join(BETA_SCHEDULES)} (or trained_betas)")
    try:
        unet = UNet2DModel.from_pretrained(str(unet_dir), local_files_only=True, low_cpu_mem_usage=False,
                                           torch_dtype=dtype)
        scheduler = DDPMScheduler.from_config(scheduler_config)
    except Exception as error:  # diffusers raises many types for broken folders
        raise CheckpointError(f"{path}: diffusers could not load it ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''})") from None
    network = DiffusersUNet(unet)
    if scheduler.config.prediction_type not in PREDICTIONS:
        raise CheckpointError(f"{path}: prediction_type {scheduler.config.prediction_type!r} is not one of "
                              f"{', '.join(PREDICTIONS)}")
    prediction = PREDICTIONS[scheduler.config.prediction_type]
    prior = VPDenoiser(network, alpha_bars=scheduler.alphas_cumprod.double(), prediction=prediction, timestep=timestep)
    parameters = sum(p.numel() for p in unet.parameters())
    prior.description = (f"diffusers UNet2DModel from {path}: {parameters / 1e6:.1f}M parameters, "
                         f"{network.config.image_size}x{network.config.image_size}, {schedule} schedule of "
                         f"{len(prior.ladder)} steps, {prediction} prediction")
    return prior
