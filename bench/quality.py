"""Restoration quality of SPGD against classical baselines, per data folder and task; SPGD lr sweeps.

For every image of every --data folder (name order, the first --limit, centre-cropped and resized to
--size with --resize) and every task, SPGD (the task preset's settings, the prior's recommended ones, then
--set) and every classical baseline of --baselines (default: all of `spgd.baselines.METHODS`) that applies
to the task restore the same measurement: image k measured with seed k (`spgd.harness`). Where the
measurement is itself an image of the clean image's size (blur, inpainting), it is scored too
("measurement", no restoration). Scores are PSNR/SSIM of the 8-bit images, compared over the images SPGD
restored without failure. Every (method, image) score is written when done to
OUT/records/<data>/<task>/<method>/<image>.json and reused on a rerun, so a stopped run resumes and a finished
one restores nothing again. A method's folder is named by its settings (SPGD's --set, a baseline's
noise-dependent ones), so other settings get their own records; OUT/settings.json holds what the records
depend on besides (model, precision, size, resize), and another value of those in the same OUT is refused.
Writes OUT/quality.md and OUT/quality.json.

With --gaussian FILE (a low-rank Gaussian face prior, bench/fit_gaussian_faces.py) its exact posterior mean
is one more method on every linear task ("gaussian"): the strongest classical prior for aligned faces.
With --lpips every method is also scored with LPIPS (AlexNet; `spgd weights fetch`).

With --sweep-lr, SPGD runs instead once per learning rate (default task: inpainting_box), and OUT/sweep.md
and OUT/sweep.json give PSNR/SSIM per lr and the best lr (highest mean PSNR among the lrs with no failed
image; null if there is none).

    python bench/quality.py --model ../shared/reference/tiny_adm64.pt --data ../shared/datasets/ffhq-demo \\
        --resize --limit 3 --tasks super_resolution gaussian_blur --baselines bicubic wiener \\
        --set steps=10 inner_steps=2 sigma_max=10 --out runs/quality-tiny
    python bench/quality.py --model faces64.safetensors --data VAL_DIR --resize --sweep-lr 1.5 2.5 4 \\
        --out runs/sweep-box
"""
from __future__ import annotations

import argparse
import copy
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file
from torch import Tensor

import spgd
from spgd import harness, io
from spgd.api import to_image_range
from spgd.baselines import METHODS, baseline_methods, classical_restore, richardson_lucy_iterations, wiener_balance
from spgd.harness import Method
from spgd.methods import with_precision
from spgd.metrics import image_scores
from spgd.operators import Operator, make_operator
from spgd.priors.fast import PRECISIONS
from spgd.priors.gaussian import LowRankGaussian
from spgd.run import RunSpec, make_spec, restore_batch, shown_value
from spgd.tasks import load_task, parse_key_values

TASKS = ("super_resolution", "inpainting_random", "gaussian_blur", "inpainting_box")
SWEEP_TASK = "inpainting_box"
SPGD, MEASUREMENT, GAUSSIAN = "spgd", "measurement", "gaussian"
Records = dict[str, list[dict[str, Any]]]  # {method: its records}, as `spgd.harness.run` gives them per set


def data_names(folders: Sequence[Path]) -> dict[str, Path]:
    """{folder name: folder}: records are stored by folder name, which must therefore differ."""
    names: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            raise SystemExit(f"--data {folder}: not a folder")
        name = folder.resolve().name
        if name in names:
            raise SystemExit(f"--data {names[name]} and {folder} have the same name {name!r}; records are stored "
                             "by folder name, so give them different names (e.g. with a symbolic link)")
        names[name] = folder
    return names






def on_device(operator: Operator, device: str) -> Operator:
    """A copy of the harness's operator (its random parameters drawn) on `device`; the other methods keep theirs."""
    return copy.deepcopy(operator).to(device)


def spgd_method(spec: RunSpec) -> Method:
    """SPGD with the spec's resolved settings, restoring through `spgd.run.restore_batch` on the spec's device
    with seed k; a failed image comes back NaN (recorded as failed by `score`)."""
    def restore(y: Tensor, operator: Operator, clean: Tensor, k: int) -> Tensor:
        result = restore_batch(spec, [k], measured=y.to(spec.device), operator=on_device(operator, spec.device),
                               progress=False)
        if result.failed_steps[0] is None:
            return result.restored
        print(f"quality: spgd failed on image {k}: {result.failed_reasons[0]}", flush=True)
        return torch.full_like(result.restored, float("nan"))

    return Method(restore)


def classical_method(method: str) -> Method:
    """A classical baseline of `spgd.baselines` (its noise-dependent settings: the tuned defaults)."""
    return Method(lambda y, op, clean, k: to_image_range(classical_restore(y, op, method)))


def measurement_is_image(operator: Operator, size: int) -> bool:
    """Whether the measurement is a linear image of the clean image's size, so that it is scored as it is."""
    return operator.linear and operator.measurement_shape((3, size, size)) == (3, size, size)


def quality_methods(spec: RunSpec, overrides: dict[str, Any], baselines: Sequence[str], size: int,
                    gaussian: tuple[str, LowRankGaussian] | None) -> dict[str, Method]:
    """SPGD, the chosen classical baselines that apply to the task (with their noise-dependent settings in
    their labels), the Gaussian prior's posterior mean on a linear task, and the measurement where it is an
    image."""
    operator = make_operator(**spec.operator)
    settings = {"wiener": {"balance": wiener_balance(operator.noise_sigma)},
                "richardson_lucy": {"num_iter": richardson_lucy_iterations(operator.noise_sigma)}}
    table = {harness.label(SPGD, overrides): spgd_method(spec)}
    for method in baseline_methods(operator):
        if method in baselines:
            table[harness.label(method, settings.get(method, {}))] = classical_method(method)
    if gaussian is not None and operator.linear:
        sha, prior = gaussian
        table[harness.label(GAUSSIAN, {"components": int(prior.basis.shape[1]), "sha256": sha[:16]})] = Method(
            lambda y, op, clean, k: to_image_range(prior.posterior_mean(y, op)))
    if measurement_is_image(operator, size):
        table[MEASUREMENT] = Method(lambda y, op, clean, k: to_image_range(y))
    return table


def ok_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of images restored without failure."""
    return [row for row in rows if not row.get("failed")]


def compare(records: Records, spgd_label: str) -> dict[str, Any]:
    """Per-method summaries (`spgd.harness.summarise`) over the images SPGD restored without failure, and
    SPGD's PSNR margin over the best classical method (the measurement is not one) with the number of
    images on which SPGD beats it."""
    restored = [row["image"] for row in ok_rows(records[spgd_label])]
    result: dict[str, Any] = {"images": len(restored),
                              "spgd_failed": sorted(row["image"] for row in records[spgd_label] if row.get("failed"))}
    by_image = {method: {row["image"]: row for row in rows} for method, rows in records.items()}
    result["methods"] = {method: harness.summarise(by_image[method][name] for name in restored)
                         for method in records} if restored else {}
    classical = [method for method in records if method not in (spgd_label, MEASUREMENT)]
    if restored and classical:
        stats = result["methods"]
        best = max(classical, key=lambda method: stats[method]["psnr"])
        result.update(best_baseline=best, margin_psnr=stats[spgd_label]["psnr"] - stats[best]["psnr"],
                      spgd_better=sum(by_image[spgd_label][n]["psnr"] > by_image[best][n]["psnr"] for n in restored))
    return result


def sweep_result(records: Records, labels: dict[float, str]) -> dict[str, Any]:
    """{"rows": one per lr (`labels`: {lr: its method}) with its images restored without failure summarised
    and the failed count, "best_lr": the lr of the highest mean PSNR among the lrs with no failed image (None
    if there is none)}."""
    rows = []
    for lr, method in labels.items():
        ok = ok_rows(records[method])
        rows.append({"lr": lr, "failed": len(records[method]) - len(ok),
                     **(harness.summarise(ok) if ok else {"images": 0})})
    usable = [row for row in rows if row["failed"] == 0 and row["images"] > 0]
    return {"rows": rows, "best_lr": max(usable, key=lambda row: row["psnr"])["lr"] if usable else None}


def _cell(summary: dict[str, Any], key: str) -> str:
    return "–" if key not in summary else f"{summary[key]:.2f} ± {summary['psnr_std']:.2f}" if key == "psnr" \
        else f"{summary[key]:.4f}"


def _header(settings: dict[str, Any], what: str) -> str:
    overrides = ", ".join(f"{key}={shown_value(value)}" for key, value in settings["overrides"].items())
    return (f"Model `{settings['model']}` ({settings['precision']}) at {settings['size']}x{settings['size']}; image k "
            f"measured with seed k, the same measurement for every method; SPGD settings: the task presets"
            + (f" with {overrides}" if overrides else "") + f"{what}. PSNR (dB, mean ± std) and SSIM (mean) of "
            "the 8-bit results, over the images SPGD restored without failure; seconds: the median per image. "
            "Per-image records: records/<data>/<task>/<method>/.")


def quality_markdown(report: dict[str, Any]) -> str:
    """quality.md: which classical methods ran, then per data folder a table of task x method (each baseline
    with its noise-dependent settings), then SPGD's margins."""
    settings = report["settings"]
    skipped = [method for method in METHODS if method not in settings["baselines"]]
    lines = ["# Restoration quality: SPGD against classical baselines", "", _header(settings, "") +
             " `measurement`: the measurement itself, unrestored.", "",
             f"Classical methods run: {', '.join(settings['baselines']) or 'none'}, each on the tasks it applies to"
             + (f"; not run: {', '.join(skipped)}." if skipped else "."), ""]
    margins = []
    for data, tasks in report["results"].items():
        lines += [f"## {data}", "", f"`{settings['data'][data]}`", "",
                  "| task | method | images | PSNR ↑ | SSIM ↑ | LPIPS ↓ | s / image |", "|---|---|---|---|---|---|---|"]
        for task, result in tasks.items():
            for method, stats in result["methods"].items():
                lines.append(f"| {task} | {method} | {result['images']} | {_cell(stats, 'psnr')} | "
                             f"{_cell(stats, 'ssim')} | {_cell(stats, 'lpips')} | {stats['seconds']:.3g} |")
            if result["spgd_failed"]:
                lines.append(f"| {task} | SPGD failed on | {len(result['spgd_failed'])} | "
                             f"{', '.join(result['spgd_failed'])} | | | |")
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
    lines = ["# SPGD learning-rate sweep", "", _header(report["settings"], ", lr varied") +
             " Best: the highest mean PSNR among the lrs with no failed image.", "",
             "| data | task | lr | images | failed | PSNR ↑ | SSIM ↑ |", "|---|---|---|---|---|---|---|"]
    notes = []
    for data, tasks in report["results"].items():
        for task, result in tasks.items():
            for row in result["rows"]:
                mark = " (best)" if row["lr"] == result["best_lr"] else ""
                lines.append(f"| {data} | {task} | {row['lr']:g}{mark} | {row['images']} | {row['failed']} | "
                             f"{_cell(row, 'psnr')} | {_cell(row, 'ssim')} |")
            notes.append(f"- {data}, {task}: best lr "
                         + (f"{result['best_lr']:g}" if result["best_lr"] is not None
                            else "none: no lr restored every image without failure"))
    return "\n".join([*lines, "", *notes, ""])


def scorer(with_lpips: bool) -> Callable[[Tensor, Tensor], dict[str, Any]]:
    """A record's scores: those of `spgd.metrics.image_scores`, or {"failed": True} for a failed (NaN) result."""
    def score(restored: Tensor, clean: Tensor) -> dict[str, Any]:
        return image_scores(restored, clean, with_lpips) if torch.isfinite(restored).all() else {"failed": True}
    return score


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the comparison (or the sweep) through `spgd.harness` and write its reports; returns the report."""
    overrides = parse_key_values(args.set)
    if args.sweep_lr and "lr" in overrides:
        raise SystemExit("--set lr=... and --sweep-lr contradict each other; give the learning rates to --sweep-lr")
    if not isinstance(overrides.get("lr", 0.0), (int, float)):
        raise SystemExit(f"--set lr={overrides['lr']}: not a number (a sweep in which every lr failed has "
                         "best_lr null: there is no lr to use)")
    if args.limit is not None and args.limit < 1:
        raise SystemExit(f"--limit must be at least 1, got {args.limit}")
    folders = data_names(args.data)
    files = {name: io.list_images([folder])[:args.limit] for name, folder in folders.items()}
    for name, found in files.items():
        if not found:
            raise SystemExit(f"--data {folders[name]}: no images")
    tasks = args.tasks or ([SWEEP_TASK] if args.sweep_lr else list(TASKS))
    for task in tasks:
        load_task(task)  # unknown tasks fail before any work
    gaussian = None
    if args.gaussian:
        gaussian = (hashlib.sha256(args.gaussian.read_bytes()).hexdigest(),
                    LowRankGaussian.from_state_dict(load_file(str(args.gaussian))))
    if args.lpips:
        from spgd.weights import weights_path

        weights_path("lpips_alex")  # missing weights fail now, naming the fetch command
    harness.keep_settings(args.out, {"model": str(args.model), "precision": args.precision, "size": args.size,
                             "resize": args.resize})
    prior, _ = with_precision(SPGD, spgd.load_prior(args.model, device=args.device), "", args.precision)
    if prior.image_size != args.size:
        raise SystemExit(f"--size {args.size}: the model {args.model} works at {prior.image_size}x{prior.image_size}")
    settings = {"model": str(args.model), "precision": args.precision, "size": args.size, "resize": args.resize,
                "limit": args.limit, "overrides": overrides, "data": {n: str(f) for n, f in folders.items()}}
    if not args.sweep_lr:
        settings["baselines"] = [method for method in METHODS if method in (args.baselines or METHODS)]
    restores: list[str] = []  # the harness logs each (method, image) it restores

    def log(line: str) -> None:
        restores.append(line)
        print(f"quality: {line}", flush=True)

    results: dict[str, dict[str, Any]] = {name: {} for name in folders}
    for task in tasks:
        spec = make_spec(prior, task, SPGD, settings=overrides, device=args.device)
        lrs = {lr: harness.label(SPGD, {**overrides, "lr": lr}) for lr in args.sweep_lr or []}
        if args.sweep_lr:
            table = {method: spgd_method(make_spec(prior, task, SPGD, settings={**overrides, "lr": lr},
                                                   device=args.device)) for lr, method in lrs.items()}
        else:
            table = quality_methods(spec, overrides, settings["baselines"], args.size, gaussian)
        records = harness.run(args.out, {f"{name}/{task}": found for name, found in files.items()}, table,
                              spec.operator, scorer(args.lpips),
                              load=lambda path: io.load_image(path, args.size, resize=args.resize), log=log)
        for name in folders:
            if args.sweep_lr:
                results[name][task] = sweep_result(records[f"{name}/{task}"], lrs)
            else:
                results[name][task] = {"spgd_params": spec.describe()["sampler_settings"],
                                       **compare(records[f"{name}/{task}"], harness.label(SPGD, overrides))}
        print(f"quality: {task} done", flush=True)
    print(f"quality: {len(restores)} (method, image) restores run now, the others read from {args.out / 'records'}",
          flush=True)
    report = {"settings": settings, "results": results}
    stem, render = ("sweep", sweep_markdown) if args.sweep_lr else ("quality", quality_markdown)
    io.save_json(report, args.out / f"{stem}.json")
    io.atomic_write_bytes(args.out / f"{stem}.md", render(report).encode())
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="prior checkpoint file or builtin:<name>")
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="folders of clean images")
    parser.add_argument("--size", type=int, default=64, help="image side; must be the model's (default: %(default)s)")
    parser.add_argument("--resize", action="store_true", help="centre-crop and resize images to --size")
    parser.add_argument("--tasks", nargs="+", help=f"task presets (default: {' '.join(TASKS)}; "
                                                   f"with --sweep-lr: {SWEEP_TASK})")
    parser.add_argument("--limit", type=int, help="only the first N images of each folder")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32",
                        help="SPGD's network precision (autocast, channels_last; default: %(default)s)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--baselines", nargs="+", choices=METHODS, metavar="METHOD",
                        help="the classical methods to run, each on the tasks it applies to "
                             f"(default: all of {', '.join(METHODS)})")
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
