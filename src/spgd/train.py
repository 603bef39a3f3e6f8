"""Training an ADM prior, and exporting it for `load_prior`.

Two objectives:
- "eps", guided-diffusion's: the linear beta schedule (1e-4 .. 0.02, 1000 steps),
  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, loss = |F(x_t, t) - eps|^2, uniform t. A network
  trained this way is exactly what `VPDenoiser` preconditions (the public checkpoints' objective).
- "edm", Karras et al. 2022: ln sigma ~ N(p_mean, p_std^2), x = x0 + sigma n, the preconditioned
  denoiser of `EDMDenoiser` fitted to x0 with weight 1/c_out^2 (unit-variance targets at every
  sigma). It learns faster per step and stays stable at high noise: the built-in prior's objective.

The whole dataset is prepared once (centre-crop, resize) into a uint8 NCHW array (.npy) and held
on the training device; batches, flips, timesteps and noise are drawn there from one seeded
generator, so the GPU never waits for a loader and a resumed run repeats an uninterrupted one.
"""
from __future__ import annotations

import copy
import io
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import yaml
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .devices import resolve_device
from .io import atomic_write_bytes, list_images, load_image, save_image, save_json
from .priors.adm_unet import ADMConfig, ADMUNet
from .priors.edm import edm_coefficients
from .priors.errors import CheckpointError
from .priors.loaders import OBJECTIVES, denoiser_for
from .priors.presets import ARCHITECTURES
from .sample import sample, square_grid
from .schedule import NUM_TIMESTEPS, linear_ladder
from .threads import adapt as adapt_threads

MAX_EXPORT_BYTES = 16 * 2 ** 20  # size limit of a weight file shipped as a built-in prior
WARM_STEPS = 20  # steps of a call left out of its steps/s: compilation, cuDNN autotuning


@dataclass
class TrainConfig:
    """Everything a training run needs; saved in every checkpoint and in OUT/config.yaml."""

    data: str
    out: str
    size: int = 64
    holdout: int = 0
    exclude: tuple[str, ...] = ()  # text files listing image names (one per line) never to train on
    objective: str = "eps"  # "eps" (DDPM, uniform t) or "edm" (EDM preconditioning, log-normal sigma)
    p_mean: float = -1.2  # "edm": mean of ln sigma
    p_std: float = 1.2  # "edm": standard deviation of ln sigma
    model: str | dict[str, Any] = "adm64"
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 1000
    steps: int = 100_000
    ema: float = 0.9999
    grad_clip: float = 1.0
    grid_every: int = 5000
    grid_n: int = 16
    grid_steps: int = 18
    ckpt_every: int = 5000
    keep: int = 3
    log_every: int = 50
    seed: int = 0
    workers: int = 4
    device: str = "auto"
    time_limit: float = 0.0  # seconds of training in this call (0: none); then checkpoint and return
    init: str = ""  # exported weights to start from when OUT has no checkpoint (a machine was lost)
    compile: bool = False  # torch.compile the network for the training steps (pays off on GPUs)


class _ImageFiles(Dataset):
    """Image files centre-cropped and resized to size x size, as 3xHxW uint8 tensors."""

    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        return (load_image(self.paths[i], self.size, resize=True) * 255).round().to(torch.uint8)


def holdout_list_path(out_npy: str | Path) -> Path:
    """The text file listing the held-out images of a prepared dataset."""
    out_npy = Path(out_npy)
    return out_npy.with_name(out_npy.stem + "_holdout.txt")


def read_name_lists(lists: tuple[str, ...] | list[str]) -> set[str]:
    """The image names listed (one per line) in the given text files."""
    names: set[str] = set()
    for path in map(Path, lists):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such list of images to exclude")
        names.update(line.strip() for line in path.read_text().splitlines() if line.strip())
    return names


def prepare_dataset(folder: str | Path, size: int, out_npy: str | Path, exclude_last: int = 0,
                    workers: int = 0, exclude: set[str] = frozenset()) -> np.ndarray:
    """Centre-crop and resize every image of `folder` to size x size into a uint8 Nx3xSxS .npy.

    Files named in `exclude` are left out; of the rest, the last `exclude_last` (sorted by name)
    are held out: not stored, but listed in `<out>_holdout.txt`; `<out>.json` records the source
    files and size.
    """
    files = [p for p in list_images([folder]) if p.name not in exclude]
    if not files:
        raise ValueError(f"{folder}: no images found")
    if not 0 <= exclude_last < len(files):
        raise ValueError(f"cannot hold out {exclude_last} of the {len(files)} images in {folder}")
    keep, held = files[:len(files) - exclude_last], files[len(files) - exclude_last:]
    loader = DataLoader(_ImageFiles(keep, size), batch_size=256, num_workers=workers)
    array = torch.cat(list(tqdm(loader, desc=f"preparing {folder}", leave=False))).numpy()
    buf = io.BytesIO()
    np.save(buf, array)
    out_npy = Path(out_npy)
    atomic_write_bytes(out_npy, buf.getvalue())
    atomic_write_bytes(holdout_list_path(out_npy), "".join(f"{p.name}\n" for p in held).encode())
    save_json({"size": size, "exclude_last": exclude_last, "files": [p.name for p in files]},
              out_npy.with_suffix(".json"))
    return array


def _dataset(cfg: TrainConfig) -> np.ndarray:
    """The training images: a given .npy, or a folder prepared once into OUT/data_<size>.npy."""
    data = Path(cfg.data)
    if data.suffix == ".npy":
        if cfg.holdout:
            raise ValueError("--holdout applies to a folder of images, not to a prepared .npy file")
        array = np.load(data)
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1:] != (3, cfg.size, cfg.size):
            raise ValueError(f"{data}: expected a uint8 Nx3x{cfg.size}x{cfg.size} array, "
                             f"got {array.dtype} {array.shape}")
        return array
    cache = Path(cfg.out) / f"data_{cfg.size}.npy"
    exclude = read_name_lists(cfg.exclude)
    wanted = {"size": cfg.size, "exclude_last": cfg.holdout,
              "files": [p.name for p in list_images([data]) if p.name not in exclude]}
    manifest = cache.with_suffix(".json")
    if cache.is_file() and manifest.is_file() and json.loads(manifest.read_text()) == wanted:
        return np.load(cache)
    return prepare_dataset(data, cfg.size, cache, cfg.holdout, cfg.workers, exclude)


def parse_model_config(text: str) -> str | dict[str, Any]:
    """`--config`: a preset name, a JSON/YAML file, or inline JSON -> preset name or argument dict."""
    if text in ARCHITECTURES:
        return text
    path = Path(text)
    if path.suffix in (".json", ".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such config file")
        text = path.read_text()
    elif not text.lstrip().startswith("{"):
        raise ValueError(f"--config {text!r}: not an architecture ({', '.join(ARCHITECTURES)}), "
                         "a .json/.yaml file or inline JSON")
    value = yaml.safe_load(text)
    if not isinstance(value, dict):
        raise ValueError(f"--config {text!r}: expected a mapping of guided-diffusion arguments")
    return value


def model_config(model: str | Mapping[str, Any], size: int) -> dict[str, Any]:
    """guided-diffusion arguments of a preset name or dict, at image size `size` (validated)."""
    if isinstance(model, str):
        if model not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {model!r}; architectures: {sorted(ARCHITECTURES)}")
        model = ARCHITECTURES[model]
    config = {**dict(model), "image_size": size}
    ADMConfig.from_dict(config).resolved_channel_mult()  # unknown names or sizes fail here
    return config


def latest_checkpoint(path: str | Path) -> Path | None:
    """A checkpoint file itself, or the last one of a training folder (or its checkpoints/)."""
    path = Path(path)
    if path.is_file():
        return path
    found = sorted((path / "checkpoints").glob("ckpt_*.pt")) or sorted(path.glob("ckpt_*.pt"))
    return found[-1] if found else None


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return resolve_device(name)


def _batch(data: Tensor, batch_size: int, gen: torch.Generator) -> Tensor:
    """Random images in [-1, 1], each flipped horizontally with probability 1/2 (on data's device)."""
    idx = torch.randint(len(data), (batch_size,), generator=gen, device=data.device)
    x = data[idx].float() / 127.5 - 1
    flip = torch.rand(batch_size, 1, 1, 1, generator=gen, device=data.device) < 0.5
    return torch.where(flip, x.flip(-1), x)


def epsilon_loss(model: torch.nn.Module, x0: Tensor, alpha_bar: Tensor, gen: torch.Generator) -> Tensor:
    """The DDPM loss: mean |F(x_t, t) - eps|^2 over a uniform timestep and fresh noise per image."""
    t = torch.randint(NUM_TIMESTEPS, (x0.shape[0],), generator=gen, device=x0.device)
    noise = torch.randn(x0.shape, generator=gen, device=x0.device)
    ab = alpha_bar[t].reshape(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=x0.device.type == "cuda"):
        eps = model(x_t, t)
    return (eps[:, : x0.shape[1]].float() - noise).pow(2).mean()


def edm_loss(model: torch.nn.Module, x0: Tensor, gen: torch.Generator, p_mean: float, p_std: float) -> Tensor:
    """The EDM loss: mean |F(c_in x, c_noise) - (x0 - c_skip x) / c_out|^2, ln sigma ~ N(p_mean, p_std^2).

    Equal to the x0 error of the preconditioned denoiser weighted by 1/c_out^2.
    """
    sigma = (p_mean + p_std * torch.randn(x0.shape[0], generator=gen, device=x0.device)).exp()
    noise = torch.randn(x0.shape, generator=gen, device=x0.device)
    c_skip, c_out, c_in, c_noise = edm_coefficients(sigma)
    c_skip, c_out, c_in = (c.reshape(-1, 1, 1, 1) for c in (c_skip, c_out, c_in))
    x = x0 + sigma.reshape(-1, 1, 1, 1) * noise
    with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=x0.device.type == "cuda"):
        out = model(c_in * x, c_noise)
    return (out[:, : x0.shape[1]].float() - (x0 - c_skip * x) / c_out).pow(2).mean()


def _save_grid(ema: ADMUNet, cfg: TrainConfig, step: int) -> None:
    """A grid of EMA samples (seed 0, so grids of successive steps compare) in OUT/samples/."""
    images = sample(denoiser_for(ema, cfg.objective), cfg.grid_n, seed=0, steps=cfg.grid_steps)
    save_image(square_grid(images), Path(cfg.out) / "samples" / f"step_{step:07d}.png")


def _save_checkpoint(cfg: TrainConfig, state: dict[str, Any]) -> Path:
    """Write OUT/checkpoints/ckpt_<step>.pt atomically and keep only the last `cfg.keep`."""
    folder = Path(cfg.out) / "checkpoints"
    path = folder / f"ckpt_{state['step']:07d}.pt"
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
    for old in sorted(folder.glob("ckpt_*.pt"))[:-cfg.keep]:
        old.unlink()
    return path


def _rng_states(gen: torch.Generator) -> dict[str, Tensor]:
    """The batch generator's state and the global ones (dropout draws from those)."""
    states = {"data": gen.get_state(), "torch": torch.get_rng_state()}
    if gen.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(gen.device)
    return states


def _restore(state: dict[str, Any], model: ADMUNet, ema: ADMUNet, opt: torch.optim.Optimizer,
             gen: torch.Generator) -> int:
    """Load a checkpoint's weights, optimizer and RNG states; returns its step."""
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["rng"]["data"])
    torch.set_rng_state(state["rng"]["torch"])
    if gen.device.type == "cuda" and "cuda" in state["rng"]:
        torch.cuda.set_rng_state(state["rng"]["cuda"], gen.device)
    return int(state["step"])


@torch.no_grad()
def _ema_update(ema: ADMUNet, model: ADMUNet, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, in one multi-tensor call (one launch, not one per tensor)."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (or, with `resume`, continue from the last checkpoint in OUT) until `cfg.steps` steps,
    or until `cfg.time_limit` seconds of this call have passed (then it checkpoints: resume goes on).

    Returns the final step, the logged (step, mean loss) pairs of this call, the last checkpoint and
    the training steps per second of this call after its first WARM_STEPS steps (which include
    compilation and cuDNN's algorithm search; over all steps if the call made fewer).
    """
    if cfg.time_limit < 0:
        raise ValueError(f"--time-limit must be >= 0 seconds (0: no limit), got {cfg.time_limit:g}")
    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"unknown training objective {cfg.objective!r}; objectives: {OBJECTIVES}")
    device = _device(cfg.device)
    last = latest_checkpoint(cfg.out) if resume else None
    state = torch.load(last, map_location="cpu", weights_only=True) if last else None
    if state and state.get("train", {}).get("objective", "eps") != cfg.objective:
        raise ValueError(f"{last}: trained with objective {state['train'].get('objective', 'eps')!r}, "
                         f"not {cfg.objective!r}; resume with the same --objective")
    init = None if state or not cfg.init else read_export(cfg.init, cfg.objective)
    arch = state["config"] if state else init["config"] if init else model_config(cfg.model, cfg.size)
    if arch["image_size"] != cfg.size:
        raise ValueError(f"the checkpoint's model is {arch['image_size']}x{arch['image_size']}, --size is {cfg.size}")
    torch.manual_seed(cfg.seed)
    model = ADMUNet(ADMConfig.from_dict(arch)).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                            fused=device.type == "cuda")
    gen = torch.Generator(device).manual_seed(cfg.seed)
    step = _restore(state, model, ema, opt, gen) if state else 0
    warmup_from = int(state.get("warmup_from", 0)) if state else 0
    if init:  # fresh optimizer, EMA restarted from the exported weights, the step count kept
        model.load_state_dict(init["weights"])
        ema.load_state_dict(init["weights"])
        step = warmup_from = init["step"]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = torch.from_numpy(_dataset(cfg)).to(device)
    alpha_bar = (1 / (1 + linear_ladder() ** 2)).float().to(device)
    atomic_write_bytes(Path(cfg.out) / "config.yaml",
                       yaml.safe_dump({"train": asdict(cfg), "model": arch}, sort_keys=False).encode())

    def save() -> Path:
        return _save_checkpoint(cfg, {"config": arch, "ema": ema.state_dict(), "model": model.state_dict(),
                                      "optimizer": opt.state_dict(), "step": step, "train": asdict(cfg),
                                      "rng": _rng_states(gen), "warmup_from": warmup_from})

    model.train()
    network = torch.compile(model) if cfg.compile else model
    losses: list[tuple[int, float]] = []
    running, count = torch.zeros((), device=device), 0
    saved_at = step if last else None
    bar = tqdm(total=cfg.steps, initial=step, desc="train", disable=not progress)
    start, first_step = time.perf_counter(), step
    warm_time, warm_step = start, step
    while step < cfg.steps and not (cfg.time_limit and time.perf_counter() - start > cfg.time_limit):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step - warmup_from + 1) / max(cfg.warmup, 1))
        x0 = _batch(data, cfg.batch_size, gen)
        loss = (edm_loss(network, x0, gen, cfg.p_mean, cfg.p_std) if cfg.objective == "edm"
                else epsilon_loss(network, x0, alpha_bar, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        _ema_update(ema, model, min(cfg.ema, (1 + step) / (10 + step)))
        step += 1
        running, count = running + loss.detach(), count + 1
        bar.update(1)
        if step == first_step + WARM_STEPS:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            warm_time, warm_step = time.perf_counter(), step
        if step % cfg.log_every == 0 or step == cfg.steps:
            losses.append((step, (running / count).item()))
            running, count = torch.zeros((), device=device), 0
            bar.set_postfix(loss=f"{losses[-1][1]:.4f}")
            if device.type == "cpu":
                adapt_threads()  # other programs come and go during hours of training
            with open(Path(cfg.out) / "loss.csv", "a") as f:
                f.write(f"{step},{losses[-1][1]:.6f}\n")
        if cfg.grid_every and step % cfg.grid_every == 0:
            _save_grid(ema, cfg, step)
        if cfg.ckpt_every and step % cfg.ckpt_every == 0:
            last, saved_at = save(), step
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if step == warm_step:  # no steps after the warm-up ones: count them all
        warm_time, warm_step = start, first_step
    steps_per_second = (step - warm_step) / max(time.perf_counter() - warm_time, 1e-9)
    if saved_at != step:
        last = save()
    return {"step": step, "losses": losses, "checkpoint": last, "steps_per_second": steps_per_second}


def read_export(path: str | Path, objective: str) -> dict[str, Any]:
    """The weights, network config and step of a file written by `export_weights` (float32), checked to
    have been trained with `objective`."""
    weights, meta = exported_file(Path(path), "--init")
    if meta.get("objective", "eps") != objective:
        raise ValueError(f"--init {path}: trained with objective {meta.get('objective', 'eps')!r}, not {objective!r}")
    return {"weights": {k: v.float() for k, v in weights.items()}, "config": json.loads(meta["config"]),
            "step": int(meta["step"])}


def export_weights(checkpoint: str | Path, out: str | Path, dtype: torch.dtype = torch.float16,
                   recommended: Mapping[str, Any] | None = None) -> int:
    """Write the EMA weights of a training checkpoint (or a training folder's last) as safetensors.

    The network config goes in the metadata under 'config' (so `load_prior` needs no preset). An exported
    `.safetensors` file may stand for the checkpoint: its weights and metadata are written again (to change
    the recommended settings of weights whose training folder is gone), `recommended` replacing its own.
    Returns the file size in bytes; compare with MAX_EXPORT_BYTES for a built-in prior.
    """
    from safetensors.torch import save

    if Path(checkpoint).suffix == ".safetensors":
        weights, metadata = exported_file(Path(checkpoint), "export")
    else:
        weights, metadata = _checkpoint_ema(checkpoint)
    tensors = {k: v.to(dtype).contiguous() for k, v in weights.items()}
    if recommended:
        metadata["recommended"] = json.dumps(recommended)
    blob = save(tensors, metadata=metadata)
    atomic_write_bytes(out, blob)
    return len(blob)


def _checkpoint_ema(checkpoint: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The EMA weights of a checkpoint of `spgd train` and the metadata an export carries for them."""
    path = latest_checkpoint(checkpoint)
    if path is None:
        raise CheckpointError(f"{checkpoint}: no checkpoint found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "ema" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a checkpoint written by `spgd train` (no 'ema' and 'config')")
    objective = state.get("train", {}).get("objective", "eps")
    return state["ema"], {"config": json.dumps(state["config"]), "step": str(state["step"]), "objective": objective}


def exported_file(path: Path, role: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The weights and metadata of a file written by `export_weights`; errors name `role` and the file."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"{role} {path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            weights = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as error:  # safetensors raises several types for other files
        raise CheckpointError(f"{role} {path}: not a safetensors file written by spgd export ({type(error).__name__})") from None
    if "config" not in meta or "step" not in meta:
        raise CheckpointError(f"{role} {path}: no network config and step in its metadata (not from spgd export)")
    return weights, meta
