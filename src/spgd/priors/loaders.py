"""Building ADM networks and loading checkpoints into denoisers, with errors a person can act on."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .adm_unet import ADMConfig, ADMUNet
from .edm import EDMDenoiser
from .presets import ARCHITECTURES, PUBLIC, WHERE_TO_GET
from .vp import VPDenoiser

BUILTIN_DIR = Path(__file__).parent / "builtin"  # packaged weight files: <name>.safetensors


def builtin_priors() -> dict[str, Path]:
    """{"builtin:<name>": file} for every weight file shipped in spgd/priors/builtin/."""
    return {f"builtin:{path.stem}": path for path in sorted(BUILTIN_DIR.glob("*.safetensors"))}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, unreadable, or not matching the network."""


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


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, str]:
    """(state_dict, config or None, training objective) from a torch-saved file or a safetensors file."""
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
        return state, config, meta.get("objective", "eps")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from exc
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
    return obj, config, objective


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
            more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
    return problems


def _matching_preset(state: Mapping[str, torch.Tensor]) -> str | None:
    for name in PUBLIC:
        if not _mismatch(build_network(name, "meta"), state):
            return name
    return None


def load_network(path: str | Path, config: str | Mapping[str, Any] | None = None) -> ADMUNet:
    """An ADM UNet with the weights of `path` (strict: every key and shape must match)."""
    return _load_network(path, config)[0]


def _load_network(path: str | Path, config: str | Mapping[str, Any] | None) -> tuple[ADMUNet, str]:
    """`load_network`, and the objective the network was trained with ("eps" unless the file says)."""
    path = Path(path)
    state, file_config, objective = _read_checkpoint(path)
    if config is None:
        config = file_config if file_config is not None else _matching_preset(state)
        if config is None:
            raise CheckpointError(
                f"{path}: no network config stored in the file and it matches no preset "
                f"({', '.join(PUBLIC)}); give its architecture (--arch, or arch= in Python)")
    network = build_network(config, "meta")
    problems = _mismatch(network, state)
    if problems:
        hint = ""
        other = _matching_preset(state)
        if other is not None and other != config:
            hint = f"\nThis file matches the {other!r} preset: use that instead of {config!r}."
        raise CheckpointError(f"{path}: weights do not fit the network {config!r}:\n  "
                              + "\n  ".join(problems) + hint)
    network.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return network, objective


OBJECTIVES = ("eps", "edm")


def denoiser_for(network: nn.Module, objective: str) -> VPDenoiser | EDMDenoiser:
    """The denoiser D(x, sigma) of a network trained with `objective` ("eps": VP, "edm": EDM)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown training objective {objective!r}; objectives: {OBJECTIVES}")
    return EDMDenoiser(network) if objective == "edm" else VPDenoiser(network)


def load_prior(path_or_name: str | Path, config: str | Mapping[str, Any] | None = None,
               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> VPDenoiser | EDMDenoiser:
    """A frozen VP denoiser D(x, sigma) from a checkpoint file or a built-in name ("builtin:<name>").

    `config` is a preset name (`ffhq256`, `imagenet256`) or a dict of guided-diffusion arguments;
    it may be omitted when the file stores its config or matches a preset.
    """
    name = str(path_or_name)
    if name.startswith("builtin:"):
        shipped = builtin_priors()
        if name not in shipped:
            raise CheckpointError(
                f"{name}: no such built-in prior in this version of spgd (available: "
                f"{sorted(shipped) or 'none yet'}); pass a checkpoint file instead, e.g. "
                f"{WHERE_TO_GET['ffhq256']}")
        path_or_name = shipped[name]
    network, objective = _load_network(path_or_name, config)
    for module in network.modules():  # normalisation layers stay float32, as in guided-diffusion's fp16 mode
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            module.to(dtype)
    return denoiser_for(network, objective).to(device=device)
