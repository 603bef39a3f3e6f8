"""`spgd train | export | sample`: training a prior, writing its weights, drawing from it.

`train`'s flags come from `spgd.train.TrainConfig` itself (`dataclass_flags`): a field is a flag of the same
name, its default and help from the class, so the two never drift apart.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable

from .priors.loaders import DEFAULT_PRIOR

TRAIN_HELP = {
    "data": "folder of images (any size; centre-cropped and resized) or a prepared .npy",
    "out": "run folder",
    "size": "image side",
    "holdout": "hold out the last N images by name, listed in OUT/data_<size>_holdout.txt",
    "exclude": "text files naming images (one per line) never to train on, e.g. a validation split",
    "objective": "eps: DDPM epsilon, uniform t; edm: EDM preconditioning, log-normal sigma",
    "model": "network: a preset, a .json/.yaml file or inline JSON of guided-diffusion arguments",
    "lr": "AdamW learning rate",
    "warmup": "linear lr warm-up steps",
    "steps": "total optimizer steps",
    "grid_every": "sample grid every N steps (0: never)",
    "ckpt_every": "checkpoint every N steps (0: at the end only)",
    "workers": "DataLoader workers when reading the image files",
    "init": "exported weights (spgd export) to start from when OUT has no checkpoint: fresh optimizer, EMA from "
            "the weights, their step count kept",
    "time_limit": "stop after this many seconds of training, with a checkpoint (0: no limit)",
    "compile": "torch.compile the network (worth it on a GPU)",
    "device": "auto (cuda if available), cpu, cuda, cuda:1, ...",
}
TRAIN_FLAGS = {"model": "--config", "out": "--out"}  # fields whose flag has another name
TRAIN_CHOICES = {"objective": ("eps", "edm")}


def dataclass_flags(p: argparse.ArgumentParser, cls: Any, helps: dict[str, str], names: dict[str, str],
                    choices: dict[str, tuple[str, ...]], required: tuple[str, ...]) -> None:
    """One flag per field of the dataclass `cls`: its type and default from the field's default (a tuple:
    several values; a bool: a switch), the help from `helps`, `names` for flags named apart from the field."""
    for f in dataclasses.fields(cls):
        flag = names.get(f.name, f"--{f.name.replace('_', '-')}")
        kwargs: dict[str, Any] = {"dest": f.name, "help": helps.get(f.name, "")}
        if f.name in required:
            p.add_argument(flag, required=True, **kwargs)
            continue
        default = f.default
        kwargs["help"] += " (default: %(default)s)"
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true", **kwargs)
        elif isinstance(default, tuple):
            p.add_argument(flag, nargs="+", default=list(default), metavar="VALUE", **kwargs)
        else:
            p.add_argument(flag, type=type(default), default=default, choices=choices.get(f.name), **kwargs)


def add_parsers(sub: argparse._SubParsersAction, add_threads: Callable[[argparse.ArgumentParser], None],
                add_arch: Callable[[argparse.ArgumentParser], None]) -> None:
    from .sample import SOLVERS
    from .train import TrainConfig

    p = sub.add_parser("train", help="train an ADM prior on a folder of images",
                       description="Train an ADM UNet (the VP prior of `load_prior`, or EDM-preconditioned). OUT "
                                   "gets checkpoints/, samples/, loss.csv and config.yaml.")
    dataclass_flags(p, TrainConfig, TRAIN_HELP, TRAIN_FLAGS, TRAIN_CHOICES, required=("data", "out"))
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT (if any)")
    add_threads(p)
    p.set_defaults(func=_train)

    e = sub.add_parser("export", help="write a training checkpoint's EMA weights as safetensors for load_prior")
    e.add_argument("checkpoint", help="checkpoint file, or a training folder (its last checkpoint), or an exported "
                                      ".safetensors (written again: new --recommended, --dtype)")
    e.add_argument("output", help="the .safetensors file to write")
    e.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16", help="(default: %(default)s)")
    e.add_argument("--recommended", type=Path, help="YAML of the sampler settings this prior needs, stored in the file: "
                                                   "{samplers: {spgd: {...}}, tasks: {TASK: {spgd: {...}}}}")
    e.set_defaults(func=_export)

    s = sub.add_parser("sample", help="unconditional samples from a prior (OUT/images/NNNNNN.png + OUT/grid.png)")
    s.add_argument("--model", "-m", default=DEFAULT_PRIOR, help="checkpoint file or builtin:<name> (default: %(default)s)")
    add_arch(s)
    s.add_argument("--n", type=int, default=16, help="number of images (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    s.add_argument("--steps", type=int, default=18, help="noise levels (default: %(default)s)")
    s.add_argument("--solver", choices=SOLVERS, default="heun", help="(default: %(default)s)")
    s.add_argument("--sigma-max", type=float, default=80.0)
    s.add_argument("--sigma-min", type=float, default=0.002)
    s.add_argument("--grid", type=int, default=64, help="the first N images go in grid.png (default: %(default)s)")
    s.add_argument("--out", "-o", default="outputs/samples", help="output folder (default: %(default)s)")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    add_threads(s)
    s.set_defaults(func=_sample)


def _train(args: argparse.Namespace) -> int:
    from .threads import summary
    from .train import TrainConfig, parse_model_config, train

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{**values, "exclude": tuple(values["exclude"]), "model": parse_model_config(values["model"])})
    result = train(cfg, resume=args.resume)
    print(f"trained to step {result['step']} ({result['steps_per_second']:.2f} steps/s; {summary()}) "
          f"-> {result['checkpoint']}")
    if result["step"] < cfg.steps:
        print(f"stopped by --time-limit {cfg.time_limit:g} s before step {cfg.steps}; --resume continues")
    return 0


def _export(args: argparse.Namespace) -> int:
    import torch

    from .train import MAX_EXPORT_BYTES, export_weights

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    recommended = read_recommended(args.recommended) if args.recommended else None
    size = export_weights(args.checkpoint, args.output, dtype, recommended)
    print(f"wrote {args.output} ({size / 2 ** 20:.2f} MiB)")
    if size > MAX_EXPORT_BYTES:
        print(f"warning: over the {MAX_EXPORT_BYTES // 2 ** 20} MiB limit of a built-in prior", file=sys.stderr)
    return 0


def read_recommended(path: Path) -> dict[str, Any]:
    """A prior's recommended sampler settings from YAML, each checked against its sampler's settings."""
    import yaml

    from .samplers import check_settings
    from .tasks import task_names

    try:
        recommended = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(recommended, dict) or set(recommended) - {"samplers", "tasks"}:
        raise ValueError(f"{path}: expected the keys samplers and/or tasks, got {sorted(recommended)}")
    for sampler, settings in recommended.get("samplers", {}).items():
        check_settings(sampler, settings, f"{path} (samplers)")
    for task, samplers in recommended.get("tasks", {}).items():
        if task not in task_names():
            raise ValueError(f"{path}: unknown task {task!r}; tasks: {', '.join(task_names())}")
        for sampler, settings in samplers.items():
            check_settings(sampler, settings, f"{path} (tasks.{task})")
    return recommended


def _sample(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .io import save_image
    from .priors import load_prior
    from .sample import sample, square_grid

    if args.n < 1 or args.batch_size < 1:
        raise ValueError("--n and --batch-size must be >= 1")
    prior = load_prior(args.model, args.arch, device=args.device)
    print(f"spgd: model: {prior.description}", file=sys.stderr)
    out, grid = Path(args.out), []
    for start in tqdm(range(0, args.n, args.batch_size), desc="sample", unit="batch"):
        count = min(args.batch_size, args.n - start)
        images = sample(prior, count, seed=args.seed + start, steps=args.steps, sigma_max=args.sigma_max,
                        sigma_min=args.sigma_min, solver=args.solver).cpu()
        for i, image in enumerate(images, start):  # a folder of samples alone: `spgd fid OUT/images ...`
            save_image(image, out / "images" / f"{i:06d}.png")
        grid += list(images[: max(0, args.grid - len(grid))])
    if grid:
        save_image(square_grid(grid), out / "grid.png")
    print(f"sampled {args.n} image(s) -> {out / 'images'}/")
    return 0
