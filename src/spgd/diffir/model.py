"""A trained DiffIR restorer: a `spgd.protocols.Restorer` of its own, what `--sampler diffir` runs.

A weight file holds one stage's EMA weights (fp16 safetensors) and, as JSON metadata, the network
configuration, the task and operator parameters it was trained on, its training steps and data. The model
takes a measurement y of that operator at any size: the degraded input is reflect-padded on the bottom and
right to a multiple of the network's stride and the result cropped back, as the released `pad_test` does.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from ..samplers import mean_of_runs
from ..protocols import Stopped
from ..samplers.common import DivergenceError, Trace
from ..seeding import start_draws
from .network import DiffIRConfig, DiffIRS1, DiffIRS2, config_from_dict

FORMAT = "spgd-diffir"


FILL_SIGMAS = (0.7, 1.4, 2.8, 5.6, 11.0, 22.0)  # Gaussian widths (pixels) of `fill_holes`' start, fine to coarse
FILL_ITERATIONS = 150  # its biharmonic smoothing steps (step 0.4, stable below 0.5)


def degraded_input(cfg: DiffIRConfig, operator: Any, y: Tensor) -> Tensor:
    """The DIRformer's input in [0, 1] from a measurement y in [-1, 1]: the degraded image itself, and for
    inpainting the image with its holes zeroed beside the hole mask (1 on holes), the released layout, or
    with `cfg.fill` its holes filled by `fill_holes` instead of zeroed."""
    image = (y + 1) / 2
    if cfg.head != "inpaint":
        return image
    known = operator.A(torch.ones_like(y))[:, :1]  # y = x * mask: the mask of known pixels
    return torch.cat([fill_holes(image, known) if cfg.fill else image * known, 1 - known], dim=1)


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """x convolved with a separable Gaussian (radius 3 sigma, zeros outside the image)."""
    radius = int(3 * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = (kernel / kernel.sum()).reshape(1, 1, -1).repeat(x.shape[1], 1, 1)
    x = F.conv2d(x, kernel[:, :, None, :], padding=(0, radius), groups=x.shape[1])
    return F.conv2d(x, kernel[:, :, :, None], padding=(radius, 0), groups=x.shape[1])


def fill_holes(image: Tensor, known: Tensor, iterations: int = FILL_ITERATIONS) -> Tensor:
    """`image` with its holes (`known` 0) filled smoothly, close to biharmonic inpainting (skimage's
    `inpaint_biharmonic`) at a fraction of its cost, batched: a start by normalised Gaussian convolution,
    coarse to fine (at each width the weighted mean of the known pixels around, trusted in proportion to how
    many known pixels it rests on, over the next coarser estimate), then `iterations` gradient steps on the
    squared discrete Laplacian over the holes. Known pixels stay."""
    kept = image * known
    filled = (kept.sum((-2, -1), keepdim=True) / known.sum((-2, -1), keepdim=True).clamp_min(1)).expand_as(image)
    for sigma in reversed(FILL_SIGMAS):
        weight, total = _gaussian_blur(known, sigma), _gaussian_blur(kept, sigma)
        trust = (weight * 2 * torch.pi * sigma ** 2).clamp(max=1)  # known pixels under the kernel, up to 1
        filled = trust * total / weight.clamp_min(1e-8) + (1 - trust) * filled
    filled = kept + (1 - known) * filled
    hole = 1 - known
    for _ in range(iterations):
        filled = filled - 0.4 * hole * _laplacian(_laplacian(filled))
    return filled


def _laplacian(x: Tensor) -> Tensor:
    """The 4-neighbour mean minus the pixel (replicated borders)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]) / 4 - x


def composite(cfg: DiffIRConfig, lq: Tensor, restored: Tensor) -> Tensor:
    """Inpainting's output: the network's pixels in the holes, the measured ones elsewhere (released
    `mask * pred + (1 - mask) * img`); other heads return the network's output."""
    if cfg.head != "inpaint":
        return restored
    hole = lq[:, 3:4]
    return hole * restored + (1 - hole) * lq[:, :3]


def pad_to_stride(x: Tensor, stride: int) -> tuple[Tensor, int, int]:
    """x reflect-padded on the bottom/right to multiples of `stride` (replicate where reflection cannot
    reach), and the padding added (rows, columns)."""
    ph, pw = -x.shape[-2] % stride, -x.shape[-1] % stride
    if ph or pw:
        mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, ph, pw


SETTINGS: dict[str, Any] = {"on_nan": "raise", "mean_of": 1, "antithetic": False,
                            "self_ensemble": False}  # a DiffIR run's settings


def dihedral(x: Tensor, k: int, inverse: bool = False) -> Tensor:
    """x under the k-th of the 8 flips and rotations of the square (bit 0: left-right, bit 1: up-down,
    bit 2: transpose), or, with `inverse`, that transform undone."""
    steps = [(1, lambda t: t.flip(-1)), (2, lambda t: t.flip(-2)), (4, lambda t: t.transpose(-1, -2))]
    for bit, transform in reversed(steps) if inverse else steps:
        if k & bit:
            x = transform(x)
    return x


class DiffIRModel:
    """A stage-2 DiffIR network (or a stage-1 one, which needs the ground truth: the upper bound of the
    ablation) with what it was trained on, as a `Restorer`: one restore costs CPEN_S2 once, the IPR MLP 4
    times and one DIRformer pass; the seed draws the IPR chain's start z_T ~ N(0, I) per image (the reverse
    steps add no noise, as released). `settings` (`SETTINGS`): `mean_of` runs from other seeds, as pairs
    with `antithetic`; `self_ensemble`: the mean over the 8 flips and rotations of the input, each undone on
    its output (the "+" of EDSR+ and RCAN+: 8x the time; it assumes the degradation looks the same under
    them, as noise, bicubic SR, isotropic blur and masks do); and what a non-finite result does (`on_nan`).

    What spgd does differently from the released code (Zj-BinXia/DiffIR): networks sized for a CPU
    (`spgd.diffir.network.DiffIRConfig`), trained here on pairs this project's operators synthesise, with
    L1 losses only (no GAN/perceptual/LaMa terms), a cosine learning rate, and for inpainting L1 on every
    pixel.
    """

    image_channels = 3

    def __init__(self, network: DiffIRS2 | DiffIRS1, metadata: dict[str, Any], name: str = "",
                 settings: dict[str, Any] | None = None) -> None:
        self.network = network.eval()
        self.cfg: DiffIRConfig = network.cfg
        self.metadata = metadata
        self.name = name or metadata.get("name", "DiffIR")
        self.task = metadata.get("task", "")
        self.tasks: list[str] = metadata.get("tasks", [self.task])
        self.operator_params: dict[str, Any] = dict(metadata.get("operator", {}))
        # the clean-image size it was trained at ("--resize" brings images to it); any size restores
        self.image_size: int | None = metadata.get("image_size")
        self.chosen = ""  # why the planner chose these built-in weights, if it did
        self.settings = {**SETTINGS, **(settings or {})}

    def configured(self, settings: dict[str, Any]) -> "DiffIRModel":
        """The same network with these run settings (a shallow copy: the weights are shared)."""
        copy = DiffIRModel.__new__(DiffIRModel)
        copy.__dict__.update(self.__dict__)
        copy.settings = {**SETTINGS, **settings}
        return copy

    @property
    def description(self) -> str:
        """One line for the command line's `spgd: model:` notice."""
        parameters = sum(p.numel() for p in self.network.parameters())
        steps = self.metadata.get("steps")
        chosen = f" ({self.chosen})" if self.chosen else ""
        return (f"DiffIR {self.name}{chosen}: stage {self.metadata.get('stage', 2)}, {parameters / 1e6:.2f}M parameters, "
                f"trained for {' and '.join(self.tasks)}{f' ({steps} steps)' if steps else ''} on {self.metadata.get('data', '?')}")

    def describe(self) -> dict[str, Any]:
        return {"sampler": "diffir", "sampler_settings": dict(self.settings), "tiling": "none (any size)"}

    def check(self, operator: Any) -> None:
        """A ValueError naming both when `operator` is not the one these weights were trained for."""
        trained = self.operator_params.get("name")
        if trained and operator.name != trained:
            raise ValueError(f"{self.name}: DiffIR weights trained for {self.task or trained} ({trained}) cannot "
                             f"restore a {operator.name} measurement; use DiffIR weights trained for it")
        scale = self.operator_params.get("scale")
        if scale is not None and getattr(operator, "scale", scale) != scale:
            raise ValueError(f"{self.name}: DiffIR weights trained for {scale}x {trained} cannot restore a "
                             f"{operator.scale}x {operator.name} measurement")
        for key, (low, high) in self.trained_ranges().items():
            value = getattr(operator, key, None)
            if isinstance(value, (int, float)) and not low <= value <= high:
                warnings.warn(f"{self.name}: {operator.name} {key} {value:g} is outside the {low:g}-{high:g} these "
                              "weights were trained on; the result may be poor", stacklevel=2)

    def trained_ranges(self) -> dict[str, tuple[float, float]]:
        """{operator parameter: (low, high)} of the ranges the training pairs were drawn from (a recipe's
        `<parameter>_range`, e.g. the blind denoiser's sigma 0-50)."""
        return {key[: -len("_range")]: (float(v[0]), float(v[1])) for key, v in self.operator_params.items()
                if key.endswith("_range") and v is not None}

    def restore(self, operator: Any, y: Tensor, seeds: Sequence[int], *, x_start: Tensor | None = None,
                trace: Trace | None = None, progress: Any = True, on_nan: str | None = None,
                stop: Callable[[], bool] | None = None, kept_runs: Any = None) -> Tensor:
        """Images in [-1, 1] from measurements y (`x_start`: the IPR chain's start z_T, N x IPR length); a
        non-finite result raises `DivergenceError` (on_nan "raise") or is reported in `trace.failed` ("mark").
        `stop` is asked before every block of the network."""
        settings = dict(self.settings)
        default = settings.pop("on_nan")
        on_nan = on_nan or default

        def once(model: "DiffIRModel", operator: Any, y: Tensor, *, seed: Sequence[int], x_start: Tensor | None = None,
                 trace: Trace | None = None) -> Tensor:
            return model.restore_measurement(operator, y, seed=seed, ipr_start=x_start,
                                             transforms=8 if settings["self_ensemble"] else 1)

        with _stopping(self.network, stop):
            x = mean_of_runs(once, self, operator, y, runs=int(settings["mean_of"]),
                             antithetic=bool(settings["antithetic"]), seed=list(seeds), x_start=x_start, trace=trace,
                             kept_runs=kept_runs)
        bad = [k for k in range(x.shape[0]) if not bool(torch.isfinite(x[k]).all())]
        if bad and on_nan == "raise":
            raise DivergenceError("diffir", 0, bad, "the network's output is not finite", "check the measurement")
        for k in bad if trace is not None else ():
            trace.failed[k], trace.reasons[k] = 0, "the DiffIR network's output is not finite"
        return x

    def to(self, device: str | torch.device) -> "DiffIRModel":
        self.network.to(device)
        return self

    def restore_measurement(self, operator: Any, y: Tensor, seed: int | Sequence[int] = 0,
                            ipr_start: Tensor | None = None, gt: Tensor | None = None, transforms: int = 1) -> Tensor:
        """The restored images in [-1, 1] from measurements y: CPEN_S2 once, the 4-step IPR diffusion from
        N(0, I) drawn per image (`ipr_start` overrides it), one DIRformer pass; with `transforms` 8 the mean
        of that over the input's 8 flips and rotations (`dihedral`), each undone, the same IPR start for all.
        A stage-1 network takes the ground truth `gt` ([0, 1]) instead of the diffusion (one trained with a
        constant IPR, none)."""
        self.check(operator)
        device = next(self.network.parameters()).device
        with torch.no_grad():
            lq = degraded_input(self.cfg, operator, y.to(device))
            if not isinstance(self.network, DiffIRS1) and ipr_start is None:
                ipr_start = start_draws((self.cfg.ipr,), seed, y.shape[0], "diffir", device)
            outputs = [dihedral(self._forward(dihedral(lq, k), ipr_start, None if gt is None else dihedral(gt, k)), k,
                                inverse=True) for k in range(transforms)]
            return torch.stack(outputs).mean(0).clamp(0, 1) * 2 - 1

    def _forward(self, lq: Tensor, ipr_start: Tensor | None, gt: Tensor | None) -> Tensor:
        """One pass of the network on the input `lq` ([0, 1]), composited: the restored images in [0, 1]."""
        device = lq.device
        padded, ph, pw = pad_to_stride(lq, self.cfg.stride)
        scale = self.cfg.scale if self.cfg.head == "sr" else 1
        if isinstance(self.network, DiffIRS1):
            if gt is None and not self.cfg.constant_ipr:
                raise ValueError(f"{self.name} is a stage-1 DiffIR network: it needs the ground truth")
            gt_padded = None if gt is None else pad_to_stride(gt.to(device), self.cfg.stride * scale)[0]
            out = self.network(padded, gt_padded)
        else:
            out, _ = self.network(padded, ipr_start.to(device))
        out = out[..., :out.shape[-2] - ph * scale, :out.shape[-1] - pw * scale]
        return composite(self.cfg, lq, out).clamp(0, 1)


@contextmanager
def _stopping(network: torch.nn.Module, stop: Callable[[], bool] | None) -> Iterator[None]:
    """Within: every block of `network` first asks `stop()` and, once true, ends the run (`Stopped`)."""
    if stop is None:
        yield
        return

    def ask(*_: Any) -> None:
        if stop():
            raise Stopped(0)

    hooks = [module.register_forward_pre_hook(ask) for module in network.modules()]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


BUILTIN_DIR = Path(__file__).parent / "builtin"  # shipped weight files: <name>.safetensors


def builtin_diffir() -> dict[str, Path]:
    """The shipped DiffIR weight files by name ("builtin:diffir-<file stem>")."""
    return {f"builtin:diffir-{p.stem}": p for p in sorted(BUILTIN_DIR.glob("*.safetensors"))}


def choose_builtin(task: str | Any, image_size: tuple[int, int] | None, resize: bool = False) -> tuple[str, str]:
    """The shipped DiffIR weights for `task` (a preset name, or an operator: weights trained for an operator
    of its name and scale) and clean images of `image_size` (H, W): those trained at that size (the 64x64
    faces) when one matches or the images are to be resized, else those trained on natural images (no fixed
    size); and why. Weights are used only inside their domain: none that fits is a ValueError naming those
    that exist."""
    candidates = [(name, read_metadata(path)) for name, path in builtin_diffir().items()]
    if isinstance(task, str):
        for_task = [(name, meta) for name, meta in candidates if meta and task in meta.get("tasks", [meta.get("task")])]
    else:
        operator, task = task, task.name
        for_task = [(name, meta) for name, meta in candidates if meta and any(
            o["name"] == operator.name and o.get("scale") == getattr(operator, "scale", None)
            for o in meta.get("operators", [meta.get("operator", {})]))]
    if not for_task:
        trained = sorted({meta.get("task") for _, meta in candidates if meta})
        raise ValueError(f"no built-in DiffIR weights for task {task} (built-in ones: {', '.join(trained) or 'none'}); "
                         "train them with `spgd train-diffir` and pass --model FILE")
    sized = [(n, m) for n, m in for_task if m.get("image_size") and (resize or image_size == (m["image_size"],) * 2)]
    if sized:
        size = sized[0][1]["image_size"]
        return sized[0][0], f"chosen for {'images resized to ' if resize else ''}{size}x{size}"
    anysize = [(n, m) for n, m in for_task if not m.get("image_size")]
    if anysize:
        return anysize[0][0], "chosen for images of any size"
    trained = ", ".join(f"{name} ({meta['image_size']}x{meta['image_size']})" for name, meta in for_task)
    shown = "an image of unknown size" if image_size is None else f"a {image_size[1]}x{image_size[0]} image"
    raise ValueError(f"the built-in DiffIR weights for {task} are made for other images than {shown}: {trained}; "
                     "pass --resize to bring the images to that size, or --model FILE to use weights of your own")


def resolve_source(source: str | Path) -> Path:
    """A weight file path from a file name or a "builtin:diffir-<name>"."""
    name = str(source)
    if name.startswith("builtin:"):
        shipped = builtin_diffir()
        if name not in shipped:
            raise ValueError(f"{name}: no such built-in DiffIR weights (available: {', '.join(shipped) or 'none'})")
        return shipped[name]
    return Path(source)


def read_metadata(path: str | Path) -> dict[str, Any] | None:
    """The DiffIR metadata of a safetensors file, or None when it is not a DiffIR file."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        return None
    return json.loads(meta["diffir"])


def is_diffir_file(path: str | Path) -> bool:
    path = Path(path)
    return path.suffix == ".safetensors" and path.is_file() and read_metadata(path) is not None


def load_diffir(source: str | Path, device: str | torch.device = "cpu", name: str = "") -> DiffIRModel:
    """A DiffIR weight file (or "builtin:diffir-<name>") as a model; every key of the network must be in it."""
    path = resolve_source(source)
    if not path.is_file():
        raise FileNotFoundError(f"DiffIR weight file not found: {path}")
    metadata = read_metadata(path)
    if metadata is None:
        raise ValueError(f"{path}: not a DiffIR weight file (no '{FORMAT}' metadata)")
    cfg = config_from_dict(metadata["config"])
    network = (DiffIRS1 if metadata.get("stage", 2) == 1 else DiffIRS2)(cfg)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    missing, unexpected = network.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: DiffIR weights do not match their configuration (missing {len(missing)} keys, "
                         f"e.g. {missing[:2]}; unexpected {len(unexpected)}, e.g. {unexpected[:2]})")
    return DiffIRModel(network, metadata, name or str(source)).to(device)
