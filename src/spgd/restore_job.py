"""`spgd restore`: restore image files with a prior and a task preset, writing files a person looks at.

Two input modes. `simulate`: each input is a clean image, degraded here with the seeded operator,
restored, and scored against the original. Otherwise each input is a measurement (a low-resolution
image for super-resolution, an image plus a mask for inpainting, a blurry image plus a kernel).
Each result is written like its input (one channel for gray, 16 bits for 16-bit gray, the alpha
channel put back; `spgd.io` states the rules), and scored as written.
Each image is restored at its own size (a measurement at the size of the image behind it) with the model
the plan gives its size (`spgd.plan`), unless `resize` brings every image to the model's; images of one
size share batches, and image i of the inputs has seed + i whatever batch it lands in.
Results never overwrite anything silently: two inputs with one name, or an output folder holding an
earlier run of another request, are refused up front (`overwrite` allows the latter; the same request is
resumed, keeping every image it finished); a failed image gets no PNG, and a run that fails before its
first result leaves no files behind.
"""
from __future__ import annotations

import hashlib
import json
import sys
from io import BytesIO
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from . import io, threads
from .grids import Panel, grid_row, labelled_grid
from .metrics import image_scores
from .operators.kernel_estimation import max_normalised_correlation
from .plan import Plan
from .progress import JobProgress
from .run import load_measured, read_clean, restore_batch
from .samplers import Trace

RUN_FILES = ("config.yaml", "metrics.json", "grid.png")


@dataclass
class RestoreJob:
    """One `spgd restore` run: the plan of the request, and where and how its results are written."""

    plan: Plan
    output: Path
    seed: int = 0
    batch_size: int = 1
    overwrite: bool = False
    keep_measured: bool = True  # the pixels the measurement holds as they are come back unchanged

    @property
    def inputs(self) -> list[Path]:
        return self.plan.inputs

    @property
    def simulate(self) -> bool:
        return self.plan.request.simulate

    @property
    def resize(self) -> bool:
        return self.plan.request.resize


def check_outputs(job: RestoreJob) -> None:
    """Refuse, before any work, results that would overwrite each other or an earlier run (one of the same
    request and settings is resumed instead: `resumable`)."""
    seen: dict[str, Path] = {}
    for path in job.inputs:
        if path.stem in seen:
            raise ValueError(f"inputs {seen[path.stem]} and {path} would both be written as {path.stem}.png; "
                             "rename one or restore them in separate runs")
        seen[path.stem] = path
    if job.output.exists() and not job.output.is_dir():
        raise ValueError(f"--output {job.output}: exists and is not a folder")
    earlier = [name for name in RUN_FILES if (job.output / name).exists()]
    if earlier and not job.overwrite and not resumable(job):
        raise ValueError(f"--output {job.output}: holds an earlier run of other inputs or settings "
                         f"({', '.join(earlier)}); choose another folder or pass --overwrite")


def resumable(job: RestoreJob) -> bool:
    """Whether job.output holds an interrupted or finished run of this very request (its config.yaml, less
    what the run found out, is this job's): the same command then resumes it, keeping every finished image."""
    path = job.output / "config.yaml"
    if job.overwrite or not path.is_file():
        return False
    try:
        earlier = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    now = yaml.safe_load(yaml.safe_dump(_config(job, {}), sort_keys=False))  # as the file would hold it
    return isinstance(earlier, dict) and _comparable(earlier) == _comparable(now)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in ("estimated_from_the_measurement", "cpu_threads")}


def _finished(job: RestoreJob) -> dict[str, dict[str, Any]]:
    """{input name: its metrics entry} of the images an earlier run of this job finished (written, or failed)."""
    if not resumable(job) or not (job.output / "metrics.json").is_file():
        return {}
    try:
        images = json.loads((job.output / "metrics.json").read_text()).get("images", {})
    except (OSError, ValueError):
        return {}
    return {name: entry for name, entry in images.items()
            if entry.get("failed") or (job.output / f"{Path(name).stem}.png").is_file()}


def run_restore(job: RestoreJob, trace_factory: Callable[[], Trace] | None = None,
                stop: Callable[[], bool] | None = None, progress: bool = True) -> dict[str, Any]:
    """Restore every input; write PNGs, grid.png, metrics.json and config.yaml into job.output.

    Each batch's images and metrics.json are written as soon as it is done, so an interrupted job keeps every
    finished image and the same command resumes it (`resumable`). One bar shows the whole job (`spgd.progress`:
    images x runs x steps, its ETA the job's). `trace_factory`, if given, makes the trace of each batch (e.g.
    one that reports progress per step); `stop`, the Restorers' stop callback (`spgd.restorers.Stopped` ends
    the run). Returns {"images": per-image entries, "mean": mean scores, "failed": names of failed images}.
    """
    if job.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {job.batch_size}")
    check_outputs(job)
    done = _finished(job)
    entries: dict[int, dict[str, Any]] = {}
    rows, estimated = {}, {}
    batches = [(group, batch) for group in job.plan.groups for batch in _cut(group.indices, job.batch_size)]
    finished = [all(job.inputs[i].name in done for i in batch) for _, batch in batches]
    todo = [pair for pair, kept in zip(batches, finished) if not kept]
    for (group, batch), kept in zip(batches, finished):
        if kept:
            _keep_finished(job, group, batch, done, entries, rows, estimated)
    if done:
        tqdm.write(f"spgd: resuming {job.output}: {len(batches) - len(todo)} of {len(batches)} batch(es) were "
                   "finished", file=sys.stderr)
    units = [int(g.spec.settings.get("mean_of", 1)) * int(g.spec.settings.get("steps", 1)) for g, _ in todo]
    bar, request = JobProgress(units, disable=not progress), _request_text(job)
    try:
        for b, (group, batch) in enumerate(todo):
            paths = [job.inputs[i] for i in batch]
            bar.start_batch(b, f"{paths[0].name}{f' +{len(paths) - 1}' if len(paths) > 1 else ''} "
                               f"({len(entries) + len(paths)}/{len(job.inputs)})")
            kept = KeptRuns(job.output, hashlib.sha256((request + repr(batch)).encode()).hexdigest()[:16])
            _restore_one_batch(job, group, batch, trace_factory, stop, bar, kept, entries, rows, estimated)
            if b == 0:
                _write_config(job, estimated)
            bar.end_batch()
            _write_metrics(job, entries)
    except BaseException:
        bar.close(failed=True)
        raise
    bar.close()
    results = _write_metrics(job, entries)
    summary = _summarise(results)
    failed = [name for name, entry in results.items() if entry["failed"]]
    if estimated:
        _write_config(job, estimated)  # with every image's estimates
    io.save_image(labelled_grid([rows[i] for i in sorted(rows)]).image, job.output / "grid.png")
    return {"images": results, "mean": summary, "failed": failed}


def _restore_one_batch(job: RestoreJob, group: Any, batch: list[int], trace_factory: Callable[[], Trace] | None,
                       stop: Callable[[], bool] | None, bar: JobProgress, kept: "KeptRuns",
                       entries: dict[int, dict[str, Any]], rows: dict[int, Any], estimated: dict[str, Any]) -> None:
    """Restore one batch and write its images at once (its finished runs kept in `kept` until then); its
    entries, grid rows and estimates into the dicts."""
    paths, size, spec = [job.inputs[i] for i in batch], group.size, group.spec
    seeds = [job.seed + i for i in batch]
    operator = spec.make_operator()
    trace = trace_factory() if trace_factory is not None else None
    if job.simulate:
        clean, images = read_clean(spec, operator, paths, job.resize, size)
        result = restore_batch(spec, seeds, clean=clean, operator=operator, trace=trace,
                               keep_measured=job.keep_measured, stop=stop, progress=bar, kept_runs=kept)
    else:
        clean = None
        y, images = load_measured(spec, operator, paths, job.resize, size)
        result = restore_batch(spec, seeds, measured=y, operator=operator, trace=trace,
                               keep_measured=job.keep_measured, stop=stop, files=paths, progress=bar, kept_runs=kept)
    if result.estimated:  # what the noise model (or another measured parameter) ran with
        for path in paths:
            estimated[path.name] = result.estimated
            tqdm.write(f"spgd: {path.name}: estimated from the image: "
                       f"{', '.join(f'{k} {v}' for k, v in result.estimated.items())}", file=sys.stderr)
    for k, (index, path) in enumerate(zip(batch, paths)):
        step = result.failed_steps[k]
        entry: dict[str, Any] = {"failed": step is not None, "width": size[1], "height": size[0],
                                 "model": spec.model_name}
        if result.estimated:
            entry["estimated"] = result.estimated
        restored = images[k].as_written(result.restored[k])  # scored as the file holds it
        io.save_image(result.preview[k], job.output / f"{path.stem}_measurement.png", like=images[k])
        if step is not None:
            entry["failed_step"], entry["reason"] = step, result.failed_reasons[k]
        else:
            io.save_image(restored, job.output / f"{path.stem}.png", like=images[k])
            if clean is not None:
                entry.update(image_scores(restored, clean[k].cpu()))
            entry.update(_save_refitted(job.output, path.stem, result, k))
        entries[index] = entry
        rows[index] = grid_row(clean[k].cpu() if clean is not None else None, result.preview[k], restored, entry,
                               maps=_refitted_maps(job.output, path.stem, entry))
    kept.clear()


def _save_refitted(output: Path, stem: str, result: Any, k: int) -> dict[str, Any]:
    """Image k's parameters estimated with it (a blind blur's kernel) as STEM_NAME.npy and a picture
    STEM_NAME.png; with a simulated truth, their error (`kernel_estimation.max_normalised_correlation`)."""
    entry: dict[str, Any] = {}
    for name, values in result.refitted.items():
        io.save_array(values[k], output / f"{stem}_{name}.npy")
        io.save_image(io.map_picture(values[k]), output / f"{stem}_{name}.png")
        entry.setdefault("estimated_with_the_image", []).append(name)
        if name in result.truth:
            entry[f"{name}_mnc"] = max_normalised_correlation(values[k], result.truth[name][k])
    return entry


def _refitted_maps(output: Path, stem: str, entry: dict[str, Any]) -> list[Panel]:
    """The grid's panels of the parameters estimated with image `stem`, as its files hold them (with their MNC
    against a simulated truth)."""
    return [Panel(f"estimated {name}", io.load_image(output / f"{stem}_{name}.png"),
                  f"MNC {entry[name + '_mnc']:.3f}" if f"{name}_mnc" in entry else "")
            for name in entry.get("estimated_with_the_image", [])]


class KeptRuns:
    """The finished runs of one batch's mean of runs, as files OUT/.runs/<key>-run<k>.pt, each written
    atomically when its run ends and all removed once the batch's images are written: an interrupted job
    resumes inside a mean (`spgd.samplers.mean_of_runs`). `key` names the request and the batch."""

    def __init__(self, output: Path, key: str) -> None:
        self.folder, self.key = output / ".runs", key

    def _path(self, k: int) -> Path:
        return self.folder / f"{self.key}-run{k}.pt"

    def get(self, k: int) -> Any:
        path = self._path(k)
        return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None

    def put(self, k: int, x: Any) -> None:
        buffer = BytesIO()
        torch.save(x.detach().cpu(), buffer)
        io.atomic_write_bytes(self._path(k), buffer.getvalue())

    def clear(self) -> None:
        for path in self.folder.glob(f"{self.key}-run*.pt"):
            path.unlink()
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()


def _request_text(job: RestoreJob) -> str:
    """The request as config.yaml states it, less what a run finds out: with a batch, the key of its kept runs."""
    return yaml.safe_dump(_comparable(_config(job, {})), sort_keys=True)


def _keep_finished(job: RestoreJob, group: Any, batch: list[int], done: dict[str, dict[str, Any]],
                   entries: dict[int, dict[str, Any]], rows: dict[int, Any], estimated: dict[str, Any]) -> None:
    """An earlier run's batch, as it wrote it: its entries, estimates and grid rows (from its files)."""
    clean = read_clean(group.spec, group.spec.make_operator(), [job.inputs[i] for i in batch], job.resize,
                       group.size)[0].cpu() if job.simulate else None
    for k, index in enumerate(batch):
        path = job.inputs[index]
        entry = entries[index] = done[path.name]
        if "estimated" in entry:
            estimated[path.name] = entry["estimated"]
        preview = io.load_image(job.output / f"{path.stem}_measurement.png")
        restored = None if entry["failed"] else io.load_image(job.output / f"{path.stem}.png")
        rows[index] = grid_row(clean[k] if clean is not None else None, preview, restored, entry,
                               maps=_refitted_maps(job.output, path.stem, entry))


def _write_metrics(job: RestoreJob, entries: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """metrics.json of the images finished so far (in input order, whatever the batches), written atomically."""
    results = {job.inputs[i].name: entries[i] for i in sorted(entries)}
    failed = [name for name, entry in results.items() if entry["failed"]]
    io.save_json({"images": results, "mean": _summarise(results), "failed": failed}, job.output / "metrics.json")
    return results


def _cut(indices: list[int], batch_size: int) -> list[list[int]]:
    return [indices[i: i + batch_size] for i in range(0, len(indices), batch_size)]


def _summarise(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    ok = [r for r in results.values() if not r["failed"]]
    return {key: float(np.mean([r[key] for r in ok])) for key in ("psnr", "ssim") if ok and key in ok[0]}


def _sizes(plan: Plan) -> dict[int, tuple[int, int]]:
    return {i: group.size for group in plan.groups for i in group.indices}


def _write_config(job: RestoreJob, estimated: dict[str, dict[str, Any]]) -> None:
    io.atomic_write_bytes(job.output / "config.yaml", yaml.safe_dump(_config(job, estimated), sort_keys=False).encode())


def _config(job: RestoreJob, estimated: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """config.yaml: the plan, what was estimated from the measurements and how the job ran."""
    plan = job.plan
    return {**plan.describe(), **({"estimated_from_the_measurement": estimated} if estimated else {}),
              "seed": job.seed, "simulate": job.simulate, "batch_size": job.batch_size,
              "resize": job.resize, "keep_measured": job.keep_measured, "inputs": [str(p) for p in job.inputs],
              "restored_sizes": {plan.inputs[i].name: f"{w}x{h}" for i, (h, w) in sorted(_sizes(plan).items())},
              "cpu_threads": threads.describe()}
