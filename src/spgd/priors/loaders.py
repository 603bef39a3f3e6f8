"""Loading any checkpoint into a denoiser D(x, sigma), with errors a person can act on.

`load_prior` tells the formats apart: a built-in name (`builtin:faces64`), a public checkpoint's name
(`ffhq256`, `imagenet256`: fetched into the cache, see `hub`), a diffusers folder (see
`diffusers_prior`), or a guided-diffusion ("ADM") file (.pt/.pth or .safetensors) whose architecture
is stored in it, matched by its keys, or named. The ADM file's noise schedule comes from its config
(`noise_schedule` "linear" or "cosine", `diffusion_steps`, `predict_xstart`), or from the metadata
of `spgd train` (objective "eps" or "edm"). Every prior says what it is in `description`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..devices import resolve_device
from ..schedule import NUM_TIMESTEPS, cosine_alpha_bars, linear_alpha_bars
from .adm_unet import ADMConfig, ADMUNet
from .diffusers_prior import is_diffusers_folder, load_diffusers_prior
from .edm import EDMDenoiser
from .errors import CheckpointError
from .hub import PUBLIC_CHECKPOINTS, fetch_checkpoint
from .presets import ARCHITECTURES, PUBLIC
from .vp import VPDenoiser

BUILTIN_DIR = Path(__file__).parent / "builtin"  # packaged weight files: <name>.safetensors
DEFAULT_PRIOR = "builtin:faces64"  # the prior of `spgd restore` and `spgd.restore` when none is named
FACE_SIZE = 64  # the face prior's side: images of this size (or resized to it) are taken for aligned faces
NATURAL_PRIOR = "builtin:natural"  # the patch prior of natural images, for images of any other size


def builtin_priors() -> dict[str, Path]:
    """{"builtin:<name>": file} for every weight file shipped in spgd/priors/builtin/."""
    return {f"builtin:{path.stem}": path for path in sorted(BUILTIN_DIR.glob("*.safetensors"))}


def choose_builtin_prior(image_size: tuple[int, int] | None, resize: bool = False) -> tuple[str, str]:
    """The shipped prior for clean images of `image_size` (H, W), and why: the face prior for 64x64 images
    or images resized to it (or when the size is unknown), else the natural-image patch prior when it ships."""
    if resize or image_size is None or tuple(image_size) == (FACE_SIZE, FACE_SIZE):
        return DEFAULT_PRIOR, f"chosen for {'images resized to ' if resize else ''}{FACE_SIZE}x{FACE_SIZE} faces"
    height, width = image_size
    if NATURAL_PRIOR not in builtin_priors():
        return DEFAULT_PRIOR, f"the only built-in prior, although the {width}x{height} image is not a 64x64 face"
    return NATURAL_PRIOR, f"chosen for a {width}x{height} image, not a {FACE_SIZE}x{FACE_SIZE} face"


def resolve_config(config: str | Mapping[str, Any] | ADMConfig) -> ADMConfig:
    """A preset name, a dict of guided-diffusion arguments, or an ADMConfig -> ADMConfig."""
    if isinstance(config, ADMConfig):
        return config
    if isinstance(config, str):
        if config not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {config!r}; architectures: {', '.join(ARCHITECTURES)}")
        return ADMConfig.from_dict(ARCHITECTURES[config])
    return ADMConfig.from_dict(dict(config))


def build_network(config: str | Mapping[str, Any] | ADMConfig, device: str | torch.device = "cpu") -> ADMUNet:
    """The ADM UNet for a preset (`ffhq256`, `imagenet256`) or a guided-diffusion argument dict.

    device="meta" builds the structure without allocating weights (for checking keys and shapes).
    """
    with torch.device(device):
        return ADMUNet(resolve_config(config))


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, str, dict[str, Any]]:
    """(state_dict, config or None, training objective, recommended sampler settings) from a torch-saved
    file or a safetensors file."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
        config = json.loads(meta["config"]) if "config" in meta else None
        return state, config, meta.get("objective", "eps"), json.loads(meta.get("recommended", "{}"))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's message suggests weights_only=False: never do that for an unknown file
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}; spgd reads only "
                              "tensors from .pt files and never unpickles other objects)") from None
    config, objective = None, "eps"
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "ema", "model"):
            if isinstance(obj.get(wrapper), dict):
                config = obj.get("config") if isinstance(obj.get("config"), dict) else None
                if isinstance(obj.get("train"), dict):  # a checkpoint of `spgd train`
                    objective = obj["train"].get("objective", "eps")
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: does not hold a state dict (a mapping of parameter names to tensors)")
    return obj, config, objective, {}


def _mismatch(network: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Human-readable differences between a network's parameters and a state dict (empty if none)."""
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs network {expected[k]}"
              for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    return problems


def _matching_preset(state: Mapping[str, torch.Tensor]) -> str | None:
    for name in PUBLIC:
        if not _mismatch(build_network(name, "meta"), state):
            return name
    return None


def load_network(path: str | Path, arch: str | Mapping[str, Any] | None = None) -> ADMUNet:
    """An ADM UNet with the weights of `path` (strict: every key and shape must match)."""
    return _load_network(path, arch)[0]


def _load_network(path: str | Path, arch: str | Mapping[str, Any] | None
                  ) -> tuple[ADMUNet, dict[str, Any], str, dict[str, Any]]:
    """`load_network`, the guided-diffusion arguments it was built from, the objective it was trained
    with ("eps" unless the file says) and the sampler settings it recommends."""
    path = Path(path)
    state, file_config, objective, recommended = _read_checkpoint(path)
    if arch is None:
        arch = file_config if file_config is not None else _matching_preset(state)
        if arch is None:
            raise CheckpointError(
                f"{path}: no network config stored in the file and it matches no known architecture "
                f"({', '.join(PUBLIC)}); give its architecture (--arch, or arch= in Python)")
    network = build_network(arch, "meta")
    problems = _mismatch(network, state)
    if problems:
        hint = ""
        other = _matching_preset(state)
        if other is not None and other != arch:
            hint = f"; this file matches the {other!r} architecture: use --arch {other}"
        raise CheckpointError(f"{path}: weights do not fit the network {arch!r}: " + "; ".join(problems) + hint)
    network.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return network, dict(ARCHITECTURES[arch] if isinstance(arch, str) else arch), objective, recommended


OBJECTIVES = ("eps", "edm")


def denoiser_for(network: nn.Module, objective: str, arguments: Mapping[str, Any] | None = None
                 ) -> VPDenoiser | EDMDenoiser:
    """The denoiser D(x, sigma) of an ADM network trained with `objective` ("eps": VP, "edm": EDM);
    for "eps", the schedule and prediction its guided-diffusion `arguments` state (linear by default)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown training objective {objective!r}; objectives: {OBJECTIVES}")
    if objective == "edm":
        return EDMDenoiser(network)
    arguments = arguments or {}
    schedule = arguments.get("noise_schedule", "linear")
    steps = int(arguments.get("diffusion_steps", NUM_TIMESTEPS))
    prediction = "x0" if arguments.get("predict_xstart") else "epsilon"
    if schedule == "linear" and steps == NUM_TIMESTEPS and prediction == "epsilon":
        return VPDenoiser(network)  # the published samplers' continuous-time map of the 1000-step ladder
    if schedule == "linear":  # guided-diffusion scales the linear betas to keep their product at any length
        alpha_bars = linear_alpha_bars(steps, 1e-4 * NUM_TIMESTEPS / steps, 0.02 * NUM_TIMESTEPS / steps)
    elif schedule == "cosine":
        alpha_bars = cosine_alpha_bars(steps)
    else:
        raise ValueError(f"noise_schedule {schedule!r} is not supported; supported: linear, cosine")
    return VPDenoiser(network, alpha_bars=alpha_bars, prediction=prediction, timestep="interpolate")


def load_prior(source: str | Path = DEFAULT_PRIOR, arch: str | Mapping[str, Any] | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, *, config: str | Mapping[str, Any] | None = None
               ) -> VPDenoiser | EDMDenoiser:
    """A frozen denoiser D(x, sigma) from a checkpoint, whatever its format (see the module docstring).

    `arch`: the architecture of an ADM file that stores none and matches no public checkpoint's keys:
    a name of `ARCHITECTURES` or a dict of guided-diffusion arguments (`config` is its old name).
    """
    arch = arch if arch is not None else config
    device = resolve_device(device)
    name = str(source)
    if name.startswith("builtin:"):
        shipped = builtin_priors()
        if name not in shipped:
            raise CheckpointError(f"{name}: no such built-in prior in this version of spgd (available: "
                                  f"{', '.join(shipped) or 'none'}); or name a checkpoint file, a diffusers "
                                  f"folder or a public checkpoint ({', '.join(PUBLIC_CHECKPOINTS)})")
        path = shipped[name]
    elif name in PUBLIC_CHECKPOINTS:
        path = fetch_checkpoint(name)
        arch = arch if arch is not None else PUBLIC_CHECKPOINTS[name].arch
    else:
        path = Path(source)
    if is_diffusers_folder(path):
        return load_diffusers_prior(path, dtype).to(device=device)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, but not a diffusers model (no model_index.json or config.json)")
    network, arguments, objective, recommended = _load_network(path, arch)
    for module in network.modules():  # normalisation layers stay float32, as in guided-diffusion's fp16 mode
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            module.to(dtype)
    prior = denoiser_for(network, objective, arguments)
    prior.recommendations = recommended
    size = network.config.image_size
    kind = ("EDM-preconditioned" if objective == "edm" else
            f"{arguments.get('noise_schedule', 'linear')} schedule, "
            f"{'x0' if arguments.get('predict_xstart') else 'epsilon'} prediction")
    parameters = sum(p.numel() for p in network.parameters())
    prior.description = (f"ADM UNet (guided-diffusion) from {name}: {parameters / 1e6:.1f}M parameters, "
                         f"{size}x{size}, {kind}")
    return prior.to(device=device)
