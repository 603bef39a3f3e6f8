"""Training DiffIR's two stages on pairs the project's own operators synthesise from clean images.

Stage 1: CPEN_S1 sees ground truth and degraded input, the DIRformer restores; L1 on the image.
Stage 2: the DIRformer starts from stage 1 (every key loaded), CPEN_S1 of the same checkpoint is the frozen
teacher (no_grad, eval); the 4-step IPR chain starts from q(z_T | z_teacher) and is backpropagated through
whole; loss = L1(image) + L1(final IPR, teacher IPR). `encoder_steps` first train CPEN_S2 + denoiser on
the IPR loss alone (the released phase A).

Every random draw of step k (batch, flips, operator draws and noise per image, the chain's start) comes
from generators seeded by (seed, k), so a resumed run repeats an uninterrupted one. Checkpoints are
written atomically every `ckpt_every` steps and at the time limit; `curve.csv` gets the validation PSNR
against CPU-hours.
"""
from __future__ import annotations

import copy
import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from ..io import atomic_write_bytes, list_images, load_image
from ..operators import make_operator
from ..seeding import make_generators, stream_seed
from ..tasks import default_task, load_task
from .model import FORMAT, DiffIRModel, degraded_input
from .network import DiffIRConfig, DiffIRS1, DiffIRS2, config_from_dict


@dataclass
class DiffIRTrainConfig:
    """One stage of one task's DiffIR training; saved in every checkpoint."""

    data: str  # uint8 N x 3 x S x S .npy of clean training crops
    out: str
    task: str = ""  # the task preset(s) whose operator synthesises the pairs, "a,b": step k uses preset k mod 2
    # (one model for several masks of one operator); default: spgd's default task
    stage: int = 1
    teacher: str = ""  # stage 2: the stage-1 run folder (its latest checkpoint) or checkpoint file; a
    # constant-IPR stage 1 (the ablation) takes its DIRformer from there
    model: dict[str, Any] = field(default_factory=dict)  # DiffIRConfig fields (head and scale come from the task)
    batch_size: int = 16
    lr: float = 2e-4
    lr_min: float = 1e-6  # cosine decay from lr to lr_min over `steps`
    steps: int = 5000
    ema: float = 0.999
    encoder_steps: int = 0
    augment: str = "hflip"  # "hflip" (aligned faces) or "dihedral" (the 8 flips/rotations)
    seed: int = 0
    val: str = ""  # folder of clean validation images (restored at their size, cropped to the stride)
    val_count: int = 8
    val_every: int = 250
    ckpt_every: int = 250
    init: str = ""  # exported weights (`export`) to start from when OUT has no checkpoint (a machine was lost)
    finetune: str = ""  # exported weights of another task's model of this stage and network to start from at
    # step 0 (a fresh optimizer and schedule): a new task learns from a related one in a fraction of the steps

    def __post_init__(self) -> None:
        self.task = self.task or default_task()

    @property
    def tasks(self) -> list[str]:
        return self.task.split(",")

    @property
    def operators(self) -> list[dict[str, Any]]:
        """The operator parameters of each task preset (read once: a training step makes its operator)."""
        if not hasattr(self, "_operators"):
            self._operators = [load_task(task)["operator"] for task in self.tasks]
        return self._operators


def task_head(task: str) -> dict[str, Any]:
    """The head (and scale) a task's operator needs, from what the operator answers: a smaller image
    measurement is super-resolution, one that can leave pixels out is inpainting, another image measurement
    is restored with the residual head (deblurring)."""
    operator = make_operator(**load_task(task)["operator"])
    if not operator.image_measurement:
        raise ValueError(f"task {task}: DiffIR restores image measurements; {operator.name}'s are not images")
    side = 64
    measured = operator.measurement_shape((3, side, side))[-1]
    if measured != side:
        return {"head": "sr", "scale": side // measured}
    return {"head": "inpaint" if operator.takes_unknown_pixels else "residual"}


def network_config(cfg: DiffIRTrainConfig) -> DiffIRConfig:
    heads = [task_head(task) for task in cfg.tasks]
    if any(head != heads[0] for head in heads):
        raise ValueError(f"tasks {cfg.task}: one DiffIR model serves tasks of one operator kind only")
    return config_from_dict({**cfg.model, **heads[0]})


def _augment(x: Tensor, mode: str, gen: torch.Generator) -> Tensor:
    flips = torch.randint(0, 2 if mode == "hflip" else 8, (x.shape[0],), generator=gen)
    out = []
    for image, f in zip(x, flips.tolist()):
        if f & 1:
            image = image.flip(-1)
        if f & 2:
            image = image.flip(-2)
        if f & 4:
            image = image.transpose(-1, -2)
        out.append(image)
    return torch.stack(out)


def training_pair(cfg: DiffIRTrainConfig, data: np.ndarray, step: int,
                  net_cfg: DiffIRConfig) -> tuple[Tensor, Tensor, torch.Generator]:
    """(degraded input, ground truth), both [0, 1], for step `step`, and that step's generator."""
    gen = torch.Generator().manual_seed(stream_seed(step, f"diffir-train-{cfg.seed}"))
    idx = torch.randint(0, len(data), (cfg.batch_size,), generator=gen)
    gt = _augment(torch.from_numpy(data[idx.numpy()]).float() / 255, cfg.augment, gen)
    operator = make_operator(**cfg.operators[step % len(cfg.operators)])
    seeds = [stream_seed(step * cfg.batch_size + k, f"diffir-pairs-{cfg.seed}") for k in range(cfg.batch_size)]
    with torch.no_grad():
        y = operator.measure(gt * 2 - 1, make_generators(seeds, cfg.batch_size, "measure"))
        lq = degraded_input(net_cfg, operator, y)
    return lq, gt, gen


def exported_state(path: str | Path) -> dict[str, Any]:
    """An exported weight file as a checkpoint's parts: stage, network, EMA weights (float32), steps, CPU-seconds."""
    from .model import read_metadata

    meta = read_metadata(path)
    if meta is None:
        raise ValueError(f"{path}: not a DiffIR weight file")
    weights = {k: v.float() for k, v in load_file(str(path)).items()}
    return {"config": {"stage": meta["stage"]}, "network": meta["config"], "ema": weights,
            "step": int(meta.get("steps", 0)), "cpu_seconds": float(meta.get("cpu_hours", 0)) * 3600}


def _teacher_state(path: str) -> dict[str, Any]:
    path = Path(path)
    if path.suffix == ".safetensors":
        return exported_state(path)
    checkpoint = latest_checkpoint(path) if path.is_dir() else path
    if checkpoint is None:
        raise FileNotFoundError(f"{path}: no stage-1 checkpoint")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if state["config"]["stage"] != 1:
        raise ValueError(f"{checkpoint}: the teacher must be a stage-1 checkpoint")
    return state


def build(cfg: DiffIRTrainConfig) -> tuple[torch.nn.Module, DiffIRS1 | None]:
    """The network to train and, for stage 2, the frozen stage-1 teacher (its EMA weights). Stage 2's
    DIRformer (and a constant-IPR run's, given a teacher) is initialised from the teacher's, every key
    loaded (strict)."""
    net_cfg = network_config(cfg)
    with torch.random.fork_rng(devices=[]):  # the initial weights follow the run's seed alone
        torch.manual_seed(stream_seed(cfg.seed, f"diffir-init-{cfg.stage}"))
        return _build(cfg, net_cfg)


def _build(cfg: DiffIRTrainConfig, net_cfg: DiffIRConfig) -> tuple[torch.nn.Module, DiffIRS1 | None]:
    if cfg.stage == 1 and not cfg.teacher:
        return DiffIRS1(net_cfg), None
    state = _teacher_state(cfg.teacher)
    teacher_cfg = config_from_dict(state["network"])
    if replace(teacher_cfg, constant_ipr=net_cfg.constant_ipr) != net_cfg:
        raise ValueError(f"{cfg.teacher}: the stage-1 network's configuration differs from this stage's")
    if cfg.stage == 1:  # the ablation: a constant IPR, the DIRformer from a stage-1 run (every key)
        if not net_cfg.constant_ipr:
            raise ValueError("--teacher in stage 1 is only for a constant-IPR run (the ablation)")
        network = DiffIRS1(net_cfg)
        network.G.load_state_dict({k[2:]: v for k, v in state["ema"].items() if k.startswith("G.")}, strict=True)
        return network, None
    teacher = DiffIRS1(teacher_cfg)
    teacher.load_state_dict(state["ema"])
    teacher.eval().requires_grad_(False)
    student = DiffIRS2(net_cfg)
    student.G.load_state_dict(teacher.G.state_dict(), strict=True)
    return student, teacher


def stage_loss(cfg: DiffIRTrainConfig, net: torch.nn.Module, teacher: DiffIRS1 | None, lq: Tensor, gt: Tensor,
               gen: torch.Generator, step: int) -> tuple[Tensor, dict[str, float]]:
    """The stage's loss on one batch, and its parts for the log."""
    if teacher is None:
        loss = F.l1_loss(net(lq, gt), gt)
        return loss, {"l1": float(loss.detach())}
    with torch.no_grad():
        target = teacher.ipr(lq, gt)
    noise = torch.randn(target.shape, generator=gen)
    start = net.schedule.noisy_start(target, noise)
    if step < cfg.encoder_steps:  # phase A: CPEN_S2 + denoiser on the IPR loss alone
        loss = F.l1_loss(net.estimate_ipr(lq, start), target)
        return loss, {"ipr": float(loss.detach())}
    restored, ipr = net(lq, start)
    l1, l_ipr = F.l1_loss(restored, gt), F.l1_loss(ipr, target)
    return l1 + l_ipr, {"l1": float(l1.detach()), "ipr": float(l_ipr.detach()), "ipr_mean": float(target.mean())}


def latest_checkpoint(out: str | Path) -> Path | None:
    files = sorted(Path(out, "checkpoints").glob("ckpt_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    return files[-1] if files else None


def _save(out: Path, state: dict[str, Any], keep: int = 3) -> Path:
    buf = io.BytesIO()
    torch.save(state, buf)
    path = out / "checkpoints" / f"ckpt_{state['step']:07d}.pt"
    atomic_write_bytes(path, buf.getvalue())
    for old in sorted(path.parent.glob("ckpt_*.pt"))[:-keep]:
        old.unlink()
    return path


def validation_images(folder: str, count: int, stride: int) -> list[Tensor]:
    """The first `count` images of `folder` (by name), [0, 1], cropped top-left to a multiple of `stride`."""
    images = []
    for path in list_images([folder])[:count]:
        image = load_image(path)
        h, w = image.shape[-2] // stride * stride, image.shape[-1] // stride * stride
        images.append(image[:, :h, :w])
    return images


def validate(cfg: DiffIRTrainConfig, net: torch.nn.Module, images: list[Tensor]) -> float:
    """Mean RGB PSNR (dB) of the network on the validation images, degraded with seeds 0, 1, ... (image k
    by task k mod the number of tasks)."""
    model = DiffIRModel(net, {"task": cfg.task, "stage": cfg.stage})
    psnrs = []
    for k, clean in enumerate(images):
        operator = make_operator(**cfg.operators[k % len(cfg.operators)])
        with torch.no_grad():
            y = operator.measure(clean[None] * 2 - 1, make_generators([k], 1, "measure"))
        restored = (model.restore_measurement(operator, y, seed=k, gt=clean[None]) + 1) / 2
        mse = float(((restored - clean[None]) ** 2).mean())
        psnrs.append(10 * math.log10(1 / max(mse, 1e-12)))
    net.train()
    return float(np.mean(psnrs))


def _lr(cfg: DiffIRTrainConfig, step: int) -> float:
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))


def train(cfg: DiffIRTrainConfig, resume: bool = True, time_limit: float = 0.0, progress: bool = True) -> Path:
    """Train one stage until `steps` or `time_limit` seconds; returns the last checkpoint written."""
    from ..threads import adapt as adapt_threads

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = np.load(cfg.data, mmap_mode="r")
    net, teacher = build(cfg)
    net_cfg = net.cfg
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    encoder_params = [p for n, p in net.named_parameters() if n.startswith(("condition.", "denoise."))]
    opt_e = torch.optim.Adam(encoder_params, lr=cfg.lr, betas=(0.9, 0.99)) if cfg.encoder_steps else None
    step, cpu_seconds = 0, 0.0
    previous = latest_checkpoint(out) if resume else None
    if previous is not None:
        state = torch.load(previous, map_location="cpu", weights_only=False)
        defaults = asdict(DiffIRTrainConfig(data="", out=""))  # a field newer than the checkpoint: its default
        saved = {**{k: v for k, v in defaults.items() if k not in ("data", "out")}, **state["config"]}
        changed = sorted(k for k in asdict(cfg) if k not in ("out", "init") and saved.get(k) != asdict(cfg)[k])
        if changed:
            raise ValueError(f"{previous}: trained with other settings ({', '.join(changed)}); use a new --out")
        net.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        if opt_e is not None:
            opt_e.load_state_dict(state["opt_e"])
        step, cpu_seconds = state["step"], state["cpu_seconds"]
    elif cfg.init or cfg.finetune:  # a fresh optimizer; the network and its EMA from the exported weights
        flag, path = ("--init", cfg.init) if cfg.init else ("--finetune", cfg.finetune)
        state = exported_state(path)
        if state["config"]["stage"] != cfg.stage or config_from_dict(state["network"]) != net_cfg:
            raise ValueError(f"{flag} {path}: exported from another stage or network than this run's")
        net.load_state_dict(state["ema"])
        ema.load_state_dict(state["ema"])
        if cfg.init:  # a resume: the step count and CPU time carry on
            step, cpu_seconds = state["step"], state["cpu_seconds"]
    (out / "config.json").write_text(json.dumps({**asdict(cfg), "network": net_cfg.to_dict()}, indent=1))
    val_images = validation_images(cfg.val, cfg.val_count, net_cfg.stride * (4 if net_cfg.head == "sr" else 1)) \
        if cfg.val else []

    def snapshot() -> Path:
        state = {"config": asdict(cfg), "network": net_cfg.to_dict(), "model": net.state_dict(),
                 "ema": ema.state_dict(), "opt": opt.state_dict(), "step": step, "cpu_seconds": cpu_seconds}
        if opt_e is not None:
            state["opt_e"] = opt_e.state_dict()
        return _save(out, state)

    start_wall, start_cpu = time.time(), time.process_time()
    last = previous
    bar = tqdm(total=cfg.steps, initial=step, desc=f"DiffIR stage {cfg.stage} {cfg.task}", disable=not progress)
    net.train()
    while step < cfg.steps:
        if step % 50 == 0:
            adapt_threads()
        lq, gt, gen = training_pair(cfg, data, step, net_cfg)
        loss, parts = stage_loss(cfg, net, teacher, lq, gt, gen, step)
        optimizer = opt_e if opt_e is not None and step < cfg.encoder_steps else opt
        for group in optimizer.param_groups:
            group["lr"] = _lr(cfg, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            decay = min(cfg.ema, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), net.parameters()):
                e.lerp_(p, 1 - decay)
        step += 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in parts.items()})
        now_cpu = time.process_time()
        cpu_seconds += now_cpu - start_cpu
        start_cpu = now_cpu
        with open(out / "loss.csv", "a") as f:
            f.write(f"{step},{float(loss.detach()):.5f}\n")
        if val_images and (step % cfg.val_every == 0 or step == cfg.steps):
            psnr = validate(cfg, ema, val_images)
            new = not (out / "curve.csv").exists()
            with open(out / "curve.csv", "a", newline="") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(["step", "cpu_hours", "val_psnr"])
                writer.writerow([step, f"{cpu_seconds / 3600:.4f}", f"{psnr:.3f}"])
            bar.write(f"step {step}: validation PSNR {psnr:.2f} dB ({cpu_seconds / 3600:.2f} CPU-hours)")
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            last = snapshot()
        if time_limit and time.time() - start_wall > time_limit:
            last = snapshot()
            break
    bar.close()
    return last


def export(checkpoint: str | Path, out_file: str | Path, name: str = "", data_note: str = "",
           image_size: int | None = None, dtype: torch.dtype = torch.float16) -> Path:
    """A checkpoint's EMA network as a small safetensors file with its metadata (format, stage, network
    configuration, task and operator parameters, steps, CPU-hours, data; `image_size` for weights made for
    one clean-image size, such as aligned 64x64 faces, None for any size)."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = latest_checkpoint(checkpoint) or checkpoint
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    cfg = state["config"]
    tasks = cfg["task"].split(",")
    operators = [load_task(task)["operator"] for task in tasks]
    metadata = {"name": name or Path(out_file).stem, "stage": cfg["stage"], "config": state["network"],
                "task": tasks[0], "tasks": tasks, "operator": {"name": operators[0]["name"]} if len(tasks) > 1
                else operators[0], "operators": operators, "steps": state["step"],
                "cpu_hours": round(state["cpu_seconds"] / 3600, 3), "data": data_note or cfg["data"],
                "batch_size": cfg["batch_size"], "lr": cfg["lr"], "image_size": image_size}
    tensors = {k: v.to(dtype).contiguous() for k, v in state["ema"].items()}
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_file), metadata={"format": FORMAT, "diffir": json.dumps(metadata)})
    return Path(out_file)
