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
earlier run, are refused up front (`overwrite` allows the latter); a failed image gets no PNG, and a
run that fails before its first result leaves no files behind.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml
from tqdm.auto import tqdm

from . import io, threads
from .grids import grid_row, labelled_grid
from .metrics import image_scores
from .plan import Plan
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
    """Refuse, before any work, results that would overwrite each other or an earlier run."""
    seen: dict[str, Path] = {}
    for path in job.inputs:
        if path.stem in seen:
            raise ValueError(f"inputs {seen[path.stem]} and {path} would both be written as {path.stem}.png; "
                             "rename one or restore them in separate runs")
        seen[path.stem] = path
    if job.output.exists() and not job.output.is_dir():
        raise ValueError(f"--output {job.output}: exists and is not a folder")
    earlier = [name for name in RUN_FILES if (job.output / name).exists()]
    if earlier and not job.overwrite:
        raise ValueError(f"--output {job.output}: holds an earlier run ({', '.join(earlier)}); "
                         "choose another folder or pass --overwrite")


def run_restore(job: RestoreJob, trace_factory: Callable[[], Trace] | None = None,
                stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Restore every input; write PNGs, grid.png, metrics.json and config.yaml into job.output.

    `trace_factory`, if given, makes the trace of each batch (e.g. one that reports progress per step);
    `stop`, the Restorers' stop callback (`spgd.restorers.Stopped` ends the run).
    Returns {"images": per-image entries, "mean": mean scores, "failed": names of failed images}.
    """
    if job.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {job.batch_size}")
    check_outputs(job)
    entries: dict[int, dict[str, Any]] = {}
    rows, estimated = {}, {}
    batches = [(group, batch) for group in job.plan.groups for batch in _cut(group.indices, job.batch_size)]
    for b, (group, batch) in enumerate(tqdm(batches, desc="images", unit="batch", disable=len(batches) < 2)):
        paths, size, spec = [job.inputs[i] for i in batch], group.size, group.spec
        seeds = [job.seed + i for i in batch]
        operator = spec.make_operator()
        trace = trace_factory() if trace_factory is not None else None
        if job.simulate:
            clean, images = read_clean(spec, operator, paths, job.resize, size)
            result = restore_batch(spec, seeds, clean=clean, operator=operator, trace=trace,
                                   keep_measured=job.keep_measured, stop=stop)
        else:
            clean = None
            y, images = load_measured(spec, operator, paths, job.resize, size)
            result = restore_batch(spec, seeds, measured=y, operator=operator, trace=trace,
                                   keep_measured=job.keep_measured, stop=stop, files=paths)
        if result.estimated:  # what the noise model (or another measured parameter) ran with
            for path in paths:
                estimated[path.name] = result.estimated
                tqdm.write(f"spgd: {path.name}: estimated from the image: "
                           f"{', '.join(f'{k} {v}' for k, v in result.estimated.items())}", file=sys.stderr)
        if b == 0:
            _write_config(job, estimated)
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
            entries[index] = entry
            rows[index] = grid_row(clean[k].cpu() if clean is not None else None, result.preview[k], restored, entry)
    results = {job.inputs[i].name: entries[i] for i in sorted(entries)}  # in input order, whatever the batches
    summary = _summarise(results)
    failed = [name for name, entry in results.items() if entry["failed"]]
    io.save_json({"images": results, "mean": summary, "failed": failed}, job.output / "metrics.json")
    if estimated:
        _write_config(job, estimated)  # with every image's estimates
    io.save_image(labelled_grid([rows[i] for i in sorted(rows)]).image, job.output / "grid.png")
    return {"images": results, "mean": summary, "failed": failed}


def _cut(indices: list[int], batch_size: int) -> list[list[int]]:
    return [indices[i: i + batch_size] for i in range(0, len(indices), batch_size)]


def _summarise(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    ok = [r for r in results.values() if not r["failed"]]
    return {key: float(np.mean([r[key] for r in ok])) for key in ("psnr", "ssim") if ok and key in ok[0]}


def _sizes(plan: Plan) -> dict[int, tuple[int, int]]:
    return {i: group.size for group in plan.groups for i in group.indices}


def _write_config(job: RestoreJob, estimated: dict[str, dict[str, Any]]) -> None:
    plan = job.plan
    config = {**plan.describe(), **({"estimated_from_the_measurement": estimated} if estimated else {}),
              "seed": job.seed, "simulate": job.simulate, "batch_size": job.batch_size,
              "resize": job.resize, "keep_measured": job.keep_measured, "inputs": [str(p) for p in job.inputs],
              "restored_sizes": {plan.inputs[i].name: f"{w}x{h}" for i, (h, w) in sorted(_sizes(plan).items())},
              "cpu_threads": threads.describe()}
    io.atomic_write_bytes(job.output / "config.yaml", yaml.safe_dump(config, sort_keys=False).encode())
