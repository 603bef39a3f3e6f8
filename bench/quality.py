"""Restoration quality of SPGD against classical baselines, per data folder and task; SPGD lr sweeps.

For every image of every --data folder (name order, the first --limit, centre-cropped and resized to
--size with --resize) and every task, SPGD runs through `spgd.bench.run_bench` (resumable, one record
per image in OUT/quality/<data>/<task>/), and every classical baseline of --baselines (default: all of
`spgd.baselines.METHODS`) that applies to the task restores the same measurement: image k degraded with
seed + k, as the bench does. Where the measurement is itself an image of the clean image's size (blur,
inpainting), it is scored too ("measurement", no restoration). Scores are PSNR/SSIM of the 8-bit images,
as in `spgd bench`, compared over the images SPGD restored without failure. Writes OUT/quality.md and
OUT/quality.json.

The baselines of every folder and task are submitted at the start to --workers CPU threads, which work
beside all of SPGD's (GPU) runs. Each image's scores are written the moment they are done, to the run
folder's baselines/<image>.json, with the key of everything that determines them (image, seed, size,
resize, task and operator, methods and their settings): a stopped run keeps every finished image, and
a cached file of another key is recomputed and overwritten, never used.

With --gaussian FILE (a low-rank Gaussian face prior, bench/fit_gaussian_faces.py) its exact posterior mean
is one more method on every linear task ("gaussian"): the strongest classical prior for aligned faces.
With --lpips every method is also scored with LPIPS (AlexNet; `spgd weights fetch`).

With --sweep-lr, SPGD runs instead once per learning rate (default task: inpainting_box) into
OUT/sweep/<data>/<task>/lr_<lr>/, and OUT/sweep.md and OUT/sweep.json give PSNR/SSIM per lr and the
best lr (highest mean PSNR among the lrs with no failed image; null if there is none).

    python bench/quality.py --model ../shared/reference/tiny_adm64.pt --data ../shared/datasets/ffhq-demo \\
        --resize --limit 3 --tasks super_resolution gaussian_blur --baselines bicubic wiener \\
        --set steps=10 inner_steps=2 sigma_max=10 --out runs/quality-tiny
    python bench/quality.py --model faces64.safetensors --data VAL_DIR --resize --sweep-lr 1.5 2.5 4 \\
        --out runs/sweep-box
"""
from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

import spgd
from spgd import io
from spgd.api import to_image_range
from spgd.baselines import (
    METHODS,
    baseline_methods,
    classical_restore,
    richardson_lucy_iterations,
    wiener_balance,
)
from spgd.bench import BenchJob, Item, clean_image, item_seeds, list_items, run_bench
from spgd.metrics import image_scores
from spgd.operators import Operator, make_operator
from spgd.priors.fast import PRECISIONS, FastDenoiser
from spgd.priors.gaussian import LowRankGaussian
from spgd.plan import Request, operator_params
from spgd.tasks import load_task, parse_key_values

TASKS = ("super_resolution", "inpainting_random", "gaussian_blur", "inpainting_box")
SWEEP_TASK = "inpainting_box"
SPGD, MEASUREMENT, GAUSSIAN = "spgd", "measurement", "gaussian"
BASELINES = "baselines"
GAUSSIAN_PRIOR: dict[str, LowRankGaussian] = {}  # the --gaussian prior of this run, by its file's sha256


def data_names(folders: Sequence[Path]) -> dict[str, Path]:
    """{folder name: folder}: results are stored by folder name, which must therefore differ."""
    names: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            raise SystemExit(f"--data {folder}: not a folder")
        name = folder.resolve().name
        if name in names:
            raise SystemExit(f"--data {names[name]} and {folder} have the same name {name!r}; results are stored "
                             "by folder name, so give them different names (e.g. with a symbolic link)")
        names[name] = folder
    return names


def baseline_plan(job: BenchJob, methods: Sequence[str]) -> dict[str, dict[str, float]]:
    """{method: its noise-dependent settings} of the chosen `methods` that apply to the job's task, in
    `spgd.baselines.METHODS` order (empty when none applies)."""
    operator = make_operator(**operator_params(job.request))
    settings = {"wiener": {"balance": wiener_balance(operator.noise_sigma)},
                "richardson_lucy": {"num_iter": richardson_lucy_iterations(operator.noise_sigma)}}
    plan = {method: settings.get(method, {}) for method in baseline_methods(operator) if method in methods}
    for sha, prior in GAUSSIAN_PRIOR.items():
        if operator.linear:
            plan[GAUSSIAN] = {"components": int(prior.basis.shape[1]), "sha256": sha[:16]}
    return plan


def baseline_key(job: BenchJob, item: Item, plan: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Everything that determines the baseline scores of `item`: a cached file is used only if it records
    this key (`spgd.io.load_keyed_json`), so a run folder can never serve scores of other settings."""
    spec = job.prepare().specs[0]
    return {"image": item.path.name, "seed": job.seed + item.index, "size": spec.model.image_size,
            "resize": job.resize, "task": str(job.request.task), "operator": spec.operator, "methods": plan,
            "lpips": job.lpips}


def cached_scores(path: Path, key: dict[str, Any]) -> dict[str, dict[str, float]] | None:
    """The scores cached in `path` if it was written for `key`, else None (missing, unreadable or stale)."""
    cached = io.load_keyed_json(path, key)
    return cached["scores"] if cached is not None else None


def score_baselines(y: Tensor, operator: Operator, clean: Tensor, methods: Sequence[str], lpips: bool = False
                    ) -> dict[str, dict[str, float]]:
    """{method: {"psnr", "ssim"(, "lpips")}} of each classical `method` (all must apply to `operator`) on the
    measurement y (a batch of one), and of the measurement itself where it is an image of the clean image's
    size. "gaussian" is the exact posterior mean of the --gaussian prior."""
    def restored(method: str) -> Tensor:
        if method == GAUSSIAN:
            return next(iter(GAUSSIAN_PRIOR.values())).posterior_mean(y, operator)
        return classical_restore(y, operator, method)

    scores = {method: image_scores(to_image_range(restored(method))[0], clean, lpips) for method in methods}
    if operator.linear and operator.input_shape(y) == tuple(y.shape):
        scores[MEASUREMENT] = image_scores(to_image_range(y)[0], clean, lpips)
    return scores


def save_baselines(path: Path, key: dict[str, Any], y: Tensor, operator: Operator, clean: Tensor) -> None:
    """Score the methods of `key` on one image and cache the scores in `path` at once (atomically), so a run
    stopped at any moment keeps every finished image."""
    scores = score_baselines(y, operator, clean, list(key["methods"]), key.get("lpips", False))
    io.save_json({"key": key, "scores": scores}, path)


def start_baselines(job: BenchJob, methods: Sequence[str], pool: Executor) -> list[Future]:
    """Submit to `pool` the baselines of each image of the bench run `job` without valid cached scores: the
    image is degraded here exactly as the run does (on its device: cheap), then restored, scored and cached
    by a worker. Unreadable images are left out (the bench records them as skipped)."""
    plan = baseline_plan(job, methods)
    items, _ = list_items(job.data, job.limit)
    futures = []
    for item in items:
        key, path = baseline_key(job, item, plan), _baseline_path(job, item)
        if cached_scores(path, key) is not None:
            continue
        try:
            clean = clean_image(job, item)
        except io.ImageError:
            continue
        spec = job.prepare().specs[0]
        operator = spec.make_operator()
        y = spgd.simulate(clean[None].to(spec.device), operator, item_seeds(job, [item]))
        futures.append(pool.submit(save_baselines, path, key, y.cpu(), operator.cpu(), clean))
    return futures


def read_baselines(job: BenchJob, methods: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """{image name: scores} of every image of the bench run `job` with valid cached baseline scores."""
    plan = baseline_plan(job, methods)
    items, _ = list_items(job.data, job.limit)
    cached = {item.path.name: cached_scores(_baseline_path(job, item), baseline_key(job, item, plan))
              for item in items}
    return {name: scores for name, scores in cached.items() if scores is not None}


def _option(value: object) -> str:
    """A baseline's option for a table label: numbers compactly (1e-05), anything else as it is."""
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def _baseline_path(job: BenchJob, item: Item) -> Path:
    return job.out / BASELINES / f"{item.path.stem}.json"


def _raise_failure(futures: Sequence[Future]) -> None:
    """Raise the error of the first finished baseline that failed (a bug, not a bad image), if any."""
    for future in futures:
        error = future.exception() if future.done() else None
        if error is not None:
            raise error


def compare(spgd_records: dict[str, dict[str, Any]], baselines: dict[str, dict[str, dict[str, float]]]
            ) -> dict[str, Any]:
    """Per-method statistics over the images SPGD restored without failure (and the baselines scored),
    and SPGD's PSNR margin over the best classical baseline (the measurement is not one)."""
    failed = sorted(name for name, record in spgd_records.items() if record["failed"])
    names = [name for name, record in spgd_records.items() if not record["failed"] and name in baselines]
    keys = [key for key in ("psnr", "ssim", "lpips") if names and all(key in spgd_records[n] for n in names)]
    per_image = {name: {SPGD: {key: spgd_records[name][key] for key in keys}, **baselines[name]}
                 for name in names}
    scored = list(baselines[names[0]]) if names else []  # the same methods for every image of a task
    classical = [method for method in scored if method != MEASUREMENT]
    methods = [SPGD, *classical, *([MEASUREMENT] if MEASUREMENT in scored else [])] if names else []
    stats = {}
    for method in methods:
        values = {key: np.array([per_image[name][method][key] for name in names]) for key in keys
                  if all(key in per_image[name][method] for name in names)}
        stats[method] = {key: {"mean": float(v.mean()), "std": float(v.std())} for key, v in values.items()}
    result: dict[str, Any] = {"images": len(names), "spgd_failed": failed, "methods": stats, "per_image": per_image}
    if classical:
        best = max(classical, key=lambda m: stats[m]["psnr"]["mean"])
        result["best_baseline"] = best
        result["margin_psnr"] = stats[SPGD]["psnr"]["mean"] - stats[best]["psnr"]["mean"]
        result["spgd_better"] = sum(per_image[n][SPGD]["psnr"] > per_image[n][best]["psnr"] for n in names)
    return result


def best_lr(rows: list[dict[str, Any]]) -> float | None:
    """The lr of the highest mean PSNR among the sweep rows without failed images (None if every lr failed)."""
    usable = [row for row in rows if row["failed"] == 0 and row["images"] > 0]
    return max(usable, key=lambda row: row["psnr"]["mean"])["lr"] if usable else None


def quality_markdown(report: dict[str, Any]) -> str:
    """quality.md: which classical methods ran, then per data folder a table of task x method (each baseline
    with its noise-dependent settings), then SPGD's margins."""
    settings = report["settings"]
    skipped = [method for method in METHODS if method not in settings["baselines"]]
    lines = ["# Restoration quality: SPGD against classical baselines", "",
             f"Model `{settings['model']}` ({settings['precision']}) at {settings['size']}x{settings['size']}; "
             f"seed {settings['seed']} (image k: seed + k, the same measurement for every method); SPGD settings: the task presets"
             + (f" with {_settings_text(settings['overrides'])}" if settings["overrides"] else "") + ". "
             "PSNR (dB, mean ± std) and SSIM (mean) of the 8-bit results, over the images SPGD restored without "
             "failure; `measurement`: the measurement itself, unrestored.", "",
             f"Classical methods run: {', '.join(settings['baselines']) or 'none'}, each on the tasks it applies to"
             + (f"; not run: {', '.join(skipped)}." if skipped else "."), ""]
    margins = []
    for data, tasks in report["results"].items():
        lines += [f"## {data}", "", f"`{settings['data'][data]}`", "",
                  "| task | method | images | PSNR ↑ | SSIM ↑ | LPIPS ↓ |", "|---|---|---|---|---|---|"]
        for task, result in tasks.items():
            for method, stats in result["methods"].items():
                options = result["baselines"].get(method)
                label = f"{method} ({', '.join(f'{k}={_option(v)}' for k, v in options.items())})" if options else method
                lines.append(f"| {task} | {label} | {result['images']} | {stats['psnr']['mean']:.2f} ± "
                             f"{stats['psnr']['std']:.2f} | {stats['ssim']['mean']:.4f} | "
                             + (f"{stats['lpips']['mean']:.4f} |" if "lpips" in stats else "– |"))
            if result["spgd_failed"]:
                lines.append(f"| {task} | SPGD failed on | {len(result['spgd_failed'])} | "
                             f"{', '.join(result['spgd_failed'])} | |")
            if "best_baseline" in result:
                margins.append(f"| {data} | {task} | {result['best_baseline']} | {result['margin_psnr']:+.2f} | "
                               f"{result['spgd_better']}/{result['images']} |")
        lines.append("")
    if margins:
        lines += ["## SPGD's margin over the best classical baseline", "",
                  "| data | task | best baseline | PSNR margin (dB) | SPGD better on |", "|---|---|---|---|---|",
                  *margins, ""]
    return "\n".join(lines)


def sweep_markdown(report: dict[str, Any]) -> str:
    """sweep.md: PSNR/SSIM per lr for every data folder and task, and the best lr."""
    settings = report["settings"]
    lines = ["# SPGD learning-rate sweep", "",
             f"Model `{settings['model']}` ({settings['precision']}) at {settings['size']}x{settings['size']}; "
             f"seed {settings['seed']}; the task presets' SPGD settings"
             + (f" with {_settings_text(settings['overrides'])}" if settings["overrides"] else "")
             + ", lr varied. PSNR (dB, mean ± std) and SSIM (mean) over the images restored without failure; "
             "best: the highest mean PSNR among the lrs with no failed image.", "",
             "| data | task | lr | images | failed | PSNR ↑ | SSIM ↑ |", "|---|---|---|---|---|---|---|"]
    notes = []
    for data, tasks in report["results"].items():
        for task, result in tasks.items():
            for row in result["rows"]:
                scores = (f"{row['psnr']['mean']:.2f} ± {row['psnr']['std']:.2f} | {row['ssim']['mean']:.4f}"
                          if row["images"] else "– | –")
                mark = " (best)" if row["lr"] == result["best_lr"] else ""
                lines.append(f"| {data} | {task} | {row['lr']:g}{mark} | {row['images']} | {row['failed']} | "
                             f"{scores} |")
            notes.append(f"- {data}, {task}: best lr "
                         + (f"{result['best_lr']:g}" if result["best_lr"] is not None
                            else "none: no lr restored every image without failure"))
    return "\n".join([*lines, "", *notes, ""])


def _settings_text(overrides: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in overrides.items())


def _stats(metrics: dict[str, Any], key: str) -> dict[str, float] | None:
    summary = metrics["summary"].get(key)
    return {"mean": summary["mean"], "std": summary["std"]} if summary else None


def spgd_job(args: argparse.Namespace, prior: Any, data: Path, task: str, out: Path,
             params: dict[str, Any]) -> BenchJob:
    """The `spgd bench` run of SPGD with `params` over the task preset's and the prior's settings, into `out`."""
    name = f"{args.model} ({args.precision})"  # the prior comes loaded, on its fast path
    request = Request(task=task, sampler="spgd", model=name, settings=params, simulate=True, resize=args.resize,
                      device=args.device)
    return BenchJob(data=data, out=out, request=request, seed=args.seed, batch_size=args.batch_size,
                    lpips=args.lpips, limit=args.limit, cache={name: prior})


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the comparison (or the sweep) and write its reports; returns the report."""
    overrides = parse_key_values(args.set)
    if args.sweep_lr and "lr" in overrides:
        raise SystemExit("--set lr=... and --sweep-lr contradict each other; give the learning rates to --sweep-lr")
    if not isinstance(overrides.get("lr", 0.0), (int, float)):
        raise SystemExit(f"--set lr={overrides['lr']}: not a number (a sweep in which every lr failed has "
                         "best_lr null: there is no lr to use)")
    if args.workers < 1:
        raise SystemExit(f"--workers must be at least 1, got {args.workers}")
    folders = data_names(args.data)
    tasks = args.tasks or ([SWEEP_TASK] if args.sweep_lr else list(TASKS))
    for task in tasks:
        load_task(task)  # unknown tasks fail before any work
    if args.gaussian:
        GAUSSIAN_PRIOR.clear()
        digest = hashlib.sha256(args.gaussian.read_bytes()).hexdigest()
        GAUSSIAN_PRIOR[digest] = LowRankGaussian.from_state_dict(load_file(str(args.gaussian)))
    if args.lpips:
        from spgd.weights import weights_path

        weights_path("lpips_alex")  # missing weights fail now, naming the fetch command
    prior = spgd.load_prior(args.model, device=args.device)
    if args.precision != "fp32":
        prior = FastDenoiser(prior, args.precision)
    if prior.image_size != args.size:
        raise SystemExit(f"--size {args.size}: the model {args.model} works at {prior.image_size}x{prior.image_size}")
    settings = {"model": str(args.model), "precision": args.precision, "size": args.size, "resize": args.resize,
                "seed": args.seed, "limit": args.limit, "overrides": overrides, "data": {n: str(f) for n, f in folders.items()}}
    if args.sweep_lr:
        results: dict[str, dict[str, Any]] = {name: {} for name in folders}
        for name, folder in folders.items():
            for task in tasks:
                results[name][task] = sweep(args, prior, folder, task, args.out / "sweep" / name / task, overrides)
                print(f"quality: {name} / {task} done", flush=True)
    else:
        settings["baselines"] = [method for method in METHODS if method in (args.baselines or METHODS)]
        jobs = {(name, task): spgd_job(args, prior, folder, task, args.out / "quality" / name / task, overrides)
                for name, folder in folders.items() for task in tasks}
        results = compare_all(jobs, settings["baselines"], args.workers)
    report = {"settings": settings, "results": results}
    stem, render = ("sweep", sweep_markdown) if args.sweep_lr else ("quality", quality_markdown)
    io.save_json(report, args.out / f"{stem}.json")
    io.atomic_write_bytes(args.out / f"{stem}.md", render(report).encode())
    return report


def compare_all(jobs: dict[tuple[str, str], BenchJob], methods: Sequence[str], workers: int
                ) -> dict[str, dict[str, Any]]:
    """{data: {task: comparison}} of the SPGD bench runs `jobs` ({(data, task): job}, run one after another)
    against the classical `methods`. The baselines of every job are submitted first, so that `workers`
    threads restore them on the CPU during all of SPGD's work; each image's scores are cached as soon as
    they are done, and an interruption cancels only the images not yet started."""
    metrics: dict[tuple[str, str], dict[str, Any]] = {}
    pool = ThreadPoolExecutor(workers, thread_name_prefix="baselines")
    try:
        futures = [future for job in jobs.values() for future in start_baselines(job, methods, pool)]
        print(f"quality: {len(futures)} images to restore with the classical baselines", flush=True)
        for (name, task), job in jobs.items():
            metrics[name, task] = run_bench(job)["metrics"]
            _raise_failure(futures)
            print(f"quality: {name} / {task} done", flush=True)
        print(f"quality: waiting for {sum(not future.done() for future in futures)} classical baselines", flush=True)
        wait(futures)
        _raise_failure(futures)
    finally:
        pool.shutdown(cancel_futures=True)
    results: dict[str, dict[str, Any]] = {name: {} for name, _ in jobs}
    for (name, task), job in jobs.items():
        results[name][task] = {"spgd_params": metrics[name, task]["settings"]["sampler_settings"],
                               "baselines": baseline_plan(job, methods),
                               **compare(metrics[name, task]["images"], read_baselines(job, methods))}
    return results


def sweep(args: argparse.Namespace, prior: Any, data: Path, task: str, out: Path,
          overrides: dict[str, Any]) -> dict[str, Any]:
    """SPGD once per lr of --sweep-lr, each a bench run in out/lr_<lr>: {"rows": per lr, "best_lr"}."""
    rows = []
    for lr in args.sweep_lr:
        metrics = run_bench(spgd_job(args, prior, data, task, out / f"lr_{lr:g}", {**overrides, "lr": lr}))["metrics"]
        rows.append({"lr": lr, "images": metrics["counts"]["restored"], "failed": metrics["counts"]["failed"],
                     "psnr": _stats(metrics, "psnr"), "ssim": _stats(metrics, "ssim")})
    return {"rows": rows, "best_lr": best_lr(rows)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="prior checkpoint file or builtin:<name>")
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="folders of clean images")
    parser.add_argument("--size", type=int, default=64, help="image side; must be the model's (default: %(default)s)")
    parser.add_argument("--resize", action="store_true", help="centre-crop and resize images to --size")
    parser.add_argument("--tasks", nargs="+", help=f"task presets (default: {' '.join(TASKS)}; "
                                                   f"with --sweep-lr: {SWEEP_TASK})")
    parser.add_argument("--limit", type=int, help="only the first N images of each folder")
    parser.add_argument("--seed", type=int, default=0, help="image k is degraded and restored with seed + k")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32",
                        help="SPGD's network precision (autocast, channels_last; default: %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--baselines", nargs="+", choices=METHODS, metavar="METHOD",
                        help="the classical methods to run, each on the tasks it applies to "
                             f"(default: all of {', '.join(METHODS)})")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="threads restoring with the classical baselines, beside SPGD (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (the same command resumes)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="SPGD settings over the task presets', e.g. steps=100 lr=3.0")
    parser.add_argument("--gaussian", type=Path, help="a fitted low-rank Gaussian face prior (bench/fit_gaussian_faces.py): "
                                                      "its exact posterior mean is scored on the linear tasks")
    parser.add_argument("--lpips", action="store_true", help="also score LPIPS (AlexNet; spgd weights fetch)")
    parser.add_argument("--sweep-lr", type=float, nargs="+", metavar="LR",
                        help="instead of the comparison, run SPGD once per learning rate and tabulate")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, TypeError, FileNotFoundError) as error:  # bad files, settings or names: one line
        raise SystemExit(f"quality: error: {error}") from None
    print((args.out / ("sweep.md" if args.sweep_lr else "quality.md")).read_text())


if __name__ == "__main__":
    main()
