"""Restoration networks a person already has, as Restorers: `--sampler network --model my_x4.pth`.

The `.pth`/`.safetensors` files of the field's feed-forward restorers (ESRGAN/RRDBNet and Real-ESRGAN, SwinIR,
HAT, DAT, SCUNet, DRUNet, NAFNet, ... 40-odd architectures) load through spandrel, which detects the architecture
and its sizes from the weights. A loaded network restores a measurement that is an image (low-res for a network
of scale s > 1, the degraded image for s = 1) into the operator's image size, on the CPU or the device given;
`self_ensemble` averages its 8 flips and rotations. It draws nothing at random, so seeds change nothing.

spandrel needs torchvision, which does not import beside the pinned CPU torch 2.13.0: it is the `networks` extra,
installed with a torch/torchvision pair that works together (CI uses torch 2.14.1 + torchvision 0.29.1, as for
DeepInverse). Without it these files are refused in one line that says so.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

SETTINGS: dict[str, Any] = {"self_ensemble": False}
SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt")


def _spandrel() -> Any:
    try:
        import spandrel
    except ImportError as exc:  # torchvision missing or broken beside this torch
        raise ValueError("restoration networks load through spandrel, which is not installed here (pip install "
                         "'spgd[networks]' beside a torch with a matching torchvision; the README's network row)") from exc
    return spandrel


def _state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a weight file, read without unpickling anything else (as every spgd loader)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds no state dict")
    return state


def _descriptor(path: Path, device: str | torch.device = "cpu") -> Any:
    spandrel = _spandrel()
    loader = spandrel.ModelLoader(torch.device(device))
    return loader.load_from_state_dict(spandrel.canonicalize_state_dict(_state_dict(path)))


def is_network_file(source: str | Path | None) -> bool:
    """Whether `source` is a weight file spandrel recognises as an image-to-image network (False where spandrel
    is not installed, or for any other file)."""
    path = Path(str(source))
    if source is None or path.suffix not in SUFFIXES or not path.is_file():
        return False
    try:
        return isinstance(_descriptor(path), _spandrel().ImageModelDescriptor)
    except Exception:  # noqa: BLE001 - not a network spandrel knows: a diffusion prior, a broken file, ...
        return False


def load_network(source: str | Path, device: str | torch.device = "cpu") -> "NetworkRestorer":
    """The network in `source` as a Restorer; a one-line ValueError for a file spandrel cannot read."""
    spandrel = _spandrel()
    path = Path(str(source))
    if not path.is_file():
        raise ValueError(f"network weights not found: {source}")
    try:
        descriptor = _descriptor(path, device)
    except Exception as exc:  # noqa: BLE001 - spandrel raises several kinds for unknown or broken files
        raise ValueError(f"{path}: not a restoration network spandrel recognises ({type(exc).__name__})") from exc
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ValueError(f"{path}: a {descriptor.architecture.name} network, not an image-to-image restorer")
    return NetworkRestorer(descriptor.eval(), str(source))


class NetworkRestorer:
    """A feed-forward restoration network (a spandrel `ImageModelDescriptor`) as a `spgd.protocols.Restorer`."""

    image_size = None  # any size

    def __init__(self, descriptor: Any, name: str, settings: dict[str, Any] | None = None) -> None:
        self.descriptor, self.name = descriptor, name
        self.settings = {**SETTINGS, **(settings or {})}
        self.scale = int(descriptor.scale)
        self.image_channels = int(descriptor.output_channels)

    @property
    def description(self) -> str:
        parameters = sum(p.numel() for p in self.descriptor.model.parameters())
        return (f"{self.descriptor.architecture.name} ({self.scale}x, {parameters / 1e6:.2f}M parameters, "
                f"{self.descriptor.purpose}) from {self.name}, loaded by spandrel")

    def configured(self, settings: dict[str, Any]) -> "NetworkRestorer":
        restorer = copy.copy(self)
        restorer.settings = {**SETTINGS, **settings}
        return restorer

    def describe(self) -> dict[str, Any]:
        return {"sampler": "network", "sampler_settings": dict(self.settings), "tiling": "none (any size)"}

    def check(self, operator: Any) -> None:
        """Its input is an image a person has: a measurement that is not one is refused in one line."""
        if not operator.image_measurement:
            raise ValueError(f"{self.name}: a restoration network restores images; {operator.name} measurements "
                             "are not images")

    def restore(self, operator: Any, y: Tensor, seeds: Sequence[int], *, x_start: Tensor | None = None,
                trace: Any = None, progress: Any = True, on_nan: str | None = None,
                stop: Callable[[], bool] | None = None, kept_runs: Any = None) -> Tensor:
        """Images in [-1, 1] of the operator's image size from measurements y; a network whose scale does not
        take y's size there is a one-line ValueError; a non-finite output is marked in `trace` (on_nan "mark")."""
        height, width = operator.input_shape(y)[-2:]
        if (y.shape[-2] * self.scale, y.shape[-1] * self.scale) != (height, width):
            raise ValueError(f"{self.name}: a {self.scale}x network makes {y.shape[-2] * self.scale}x"
                             f"{y.shape[-1] * self.scale} images from this {y.shape[-2]}x{y.shape[-1]} "
                             f"{operator.name} measurement, not the {height}x{width} the task restores")
        from .diffir.model import dihedral

        lq = ((y + 1) / 2).clamp(0, 1)
        transforms = 8 if self.settings["self_ensemble"] else 1
        with torch.no_grad():
            x = torch.stack([dihedral(self._run(dihedral(lq, k)), k, inverse=True) for k in range(transforms)]).mean(0)
        bad = [k for k in range(x.shape[0]) if not bool(torch.isfinite(x[k]).all())]
        for k in bad if trace is not None and on_nan == "mark" else ():
            trace.failed[k], trace.reasons[k] = 0, "the network's output is not finite"
        if bad and on_nan != "mark":
            raise ValueError(f"{self.name}: the network's output is not finite for image(s) {bad}")
        return x.clamp(0, 1) * 2 - 1

    def _run(self, lq: Tensor) -> Tensor:
        """The network on lq ([0, 1]), reflect-padded to the sizes it needs and cropped back."""
        needs = self.descriptor.size_requirements
        height, width = lq.shape[-2:]
        multiple, minimum = max(1, int(needs.multiple_of)), int(needs.minimum)
        target_h = max(minimum, -(-height // multiple) * multiple)
        target_w = max(minimum, -(-width // multiple) * multiple)
        if needs.square:
            target_h = target_w = max(target_h, target_w)
        padded = F.pad(lq, (0, target_w - width, 0, target_h - height), mode="replicate")
        device = next(self.descriptor.model.parameters()).device
        out = self.descriptor(padded.to(device)).to(lq.device)
        return out[..., : height * self.scale, : width * self.scale]

    def to(self, device: str | torch.device) -> "NetworkRestorer":
        self.descriptor.to(torch.device(device))
        return self
