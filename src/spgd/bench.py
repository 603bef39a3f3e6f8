"""`spgd bench`: score a sampler x task x prior on a folder of clean images, resumably.

Image k of the folder (sorted by name, limited) is degraded with its own seeded operator draw and
restored with seed + k, so its result does not depend on which batch or process handles it. Each
result is written atomically the moment it is done: restored/<stem>.png, measurements/<stem>.png,
traces/<stem>.pt (with --record), then records/<stem>.json, which marks it finished. A re-run skips
finished images, so an interrupted run loses nothing. Rank 0 then rebuilds metrics.json,
metrics.md and grid.png from the records. Scores are those of the saved 8-bit PNGs, so they can be
recomputed from the files; scores a resumed run asks for that a result lacks (LPIPS, the Y-channel
scores at another crop) are computed from them.
"""
from __future__ import annotations

import io as bytes_io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor
from tqdm.auto import tqdm

from . import io
from .api import to_image_range
from .distributed import Group
from .grids import grid_row, labelled_grid, strip_positions
from .metrics import METRIC_SPACES, image_scores, ssim_y
from .plan import Plan, Request, make_plan
from .run import RunSpec, restore_batch
from .samplers import Trace

RESTORED, MEASUREMENTS, RECORDS, TRACES = "restored", "measurements", "records", "traces"
SETTINGS_FILE = "config.yaml"
GRID_ROWS = 4
METRICS = ("psnr", "ssim", "lpips")
Y_METRICS = ("psnr_y", "ssim_y")  # with metric_space "y", beside METRICS


@dataclass
class BenchJob:
    """One `spgd bench` run: the request (`spgd.plan.Request`, simulated) on the images of `data`, and how
    results are scored and kept. `prepare` lists the images and plans them, once."""

    data: Path
    out: Path
    request: Request
    seed: int = 0
    batch_size: int = 1
    limit: int | None = None
    lpips: bool = False
    record: bool = False
    metric_space: str = "rgb"  # "y": also PSNR/SSIM of the BT.601 luma without crop_border pixels per side
    crop_border: int = 0
    cache: dict[str, Any] | None = None  # models loaded before, by the name the request gives (`make_plan`)

    def prepare(self) -> Plan:
        """The images (`items`, `duplicates`) and their plan (`plan`): image k of the plan is items[k]."""
        if not hasattr(self, "plan"):
            self.items, self.duplicates = list_items(self.data, self.limit)
            self.plan = make_plan(self.request, [item.path for item in self.items], self.cache, skip_unreadable=True)
        return self.plan

    @property
    def resize(self) -> bool:
        return self.request.resize


@dataclass(frozen=True)
class Item:
    """An input image and its index k in the sorted, limited folder (its seed is seed + k)."""

    index: int
    path: Path


def result_path(out: Path, kind: str, stem: str) -> Path:
    """The file of kind RESTORED, MEASUREMENTS, RECORDS or TRACES of one image in run folder `out`."""
    suffix = {RECORDS: ".json", TRACES: ".pt"}.get(kind, ".png")
    return out / kind / f"{stem}{suffix}"


def read_record(out: Path, stem: str) -> dict[str, Any] | None:
    """The JSON record of one image, or None if there is none (or it cannot be read)."""
    try:
        return json.loads(result_path(out, RECORDS, stem).read_text())
    except (OSError, ValueError):
        return None


def is_finished(out: Path, stem: str, need_trace: bool = False) -> bool:
    """A result counts when its record and restored PNG (none for a failed image; and trace, if asked for)
    are all there."""
    record = read_record(out, stem)
    return (record is not None and "failed" in record
            and (record["failed"] or result_path(out, RESTORED, stem).is_file())
            and (not need_trace or result_path(out, TRACES, stem).is_file()))


def list_items(data: Path, limit: int | None) -> tuple[list[Item], dict[str, str]]:
    """The images of `data` sorted by name and limited, and {name: reason} of those that must be skipped
    because an earlier one has the same stem (results are stored by stem)."""
    if not data.is_dir():
        raise ValueError(f"--data {data}: not a folder")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    paths = io.list_images([data])[:limit]
    if not paths:
        raise ValueError(f"no images found in {data}")
    items, duplicates, seen = [], {}, {}
    for index, path in enumerate(paths):
        if path.stem in seen:
            duplicates[path.name] = f"same name as {seen[path.stem]} (results are stored by name)"
        else:
            seen[path.stem] = path.name
            items.append(Item(index, path))
    return items, duplicates


def clean_image(job: BenchJob, item: Item) -> Tensor:
    """The clean image of `item` as the run uses it (3xHxW in [0, 1], on the CPU): at the size its plan group
    restores it at (the model's with --resize, else its own)."""
    k = job.items.index(item) if job.prepare() else 0
    if k in job.plan.skipped:
        raise io.ImageError(job.plan.skipped[k])
    return io.load_image(item.path, job.plan.group_of(k).size, job.resize)


def spec_of(job: BenchJob, item: Item) -> RunSpec:
    return job.plan.group_of(job.items.index(item)).spec


def item_seeds(job: BenchJob, items: list[Item]) -> list[int]:
    """Image k of the folder is degraded and restored with seed + k, whatever batch it is in."""
    return [job.seed + item.index for item in items]


def run_bench(job: BenchJob, group: Group = Group()) -> dict[str, Any]:
    """Restore and score this process's unfinished images; rank 0 then writes the summary files.

    Returns {"restored": results written now by all processes, "metrics": the metrics.json content
    (None on ranks other than 0)}.
    """
    if job.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {job.batch_size}")
    job.prepare()
    _check_metric_space(job)
    items, duplicates = job.items, job.duplicates
    settings = _settings(job)
    _check_settings(job.out, settings)
    if group.rank == 0:
        io.atomic_write_bytes(job.out / SETTINGS_FILE, yaml.safe_dump(settings, sort_keys=False).encode())
    mine = [item for item in items if group.owns(item.index)]
    pending = [item for item in mine if not is_finished(job.out, item.path.stem, job.record)]
    restored = _restore_all(job, mine, pending, group)
    group.barrier()
    total = sum(group.gather(restored))
    if group.rank != 0:
        return {"restored": total, "metrics": None}
    metrics = summarise(job, items, duplicates, settings)
    _write_reports(job, items, metrics)
    return {"restored": total, "metrics": metrics}


def _check_metric_space(job: BenchJob) -> None:
    """Bad metric options fail before anything is restored."""
    if job.metric_space not in METRIC_SPACES:
        raise ValueError(f"--metric-space must be one of {', '.join(METRIC_SPACES)}, got {job.metric_space!r}")
    if job.metric_space == "rgb":
        if job.crop_border:
            raise ValueError("--crop-border applies to --metric-space y (the RGB scores are of whole images)")
        return
    for group in job.plan.groups:  # a crop the images cannot take fails here, before anything is written
        probe = torch.zeros(1, 3, *group.size)
        ssim_y(probe, probe, job.crop_border)  # a crop the images cannot take, or images without RGB, fail here


def _scores(job: BenchJob, restored: Tensor, clean: Tensor, with_lpips: bool) -> dict[str, Any]:
    """The scores of one result a record holds (with the crop of its Y-channel scores)."""
    scores: dict[str, Any] = image_scores(restored, clean, with_lpips, job.metric_space, job.crop_border)
    if job.metric_space == "y":
        scores["crop_border"] = job.crop_border
    return scores


def _settings(job: BenchJob) -> dict[str, Any]:
    """What determines the results: a run folder only ever holds results of one such setting."""
    settings = {"data": str(job.data.resolve()), "task": str(job.request.task), **job.plan.describe(),
                "seed": job.seed, "resize": job.resize}
    return yaml.safe_load(yaml.safe_dump(settings))  # as read back from the file


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    path = out / SETTINGS_FILE
    if not path.is_file():
        return
    old, new = _flat(yaml.safe_load(path.read_text()) or {}), _flat(settings)
    changed = [key for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]
    if changed:
        details = "; ".join(f"{key}: {old.get(key)!r} there, {new.get(key)!r} now" for key in changed)
        raise ValueError(f"{out} holds results of other settings ({details}); "
                         "resume with the same settings or use another --out")


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _restore_all(job: BenchJob, mine: list[Item], pending: list[Item], group: Group) -> int:
    """Restore `pending` in batches, writing each result as it is done; returns how many were written."""
    todo = {item.index for item in pending}
    done = [read_record(job.out, item.path.stem) for item in mine if item.index not in todo]
    psnrs = [r["psnr"] for r in done if r is not None and not r["failed"]]
    bar = tqdm(total=len(mine), initial=len(done), desc="bench", unit="img", disable=group.rank != 0, leave=False)
    written, batch = 0, []
    skipped = {job.items[k]: reason for k, reason in job.plan.skipped.items()}
    for n, item in enumerate(pending):
        if item in skipped:
            _skip(job.out, item, skipped[item])
            bar.update(1)
            if batch and n == len(pending) - 1:
                written += _flush(job, batch, group, psnrs, bar)
            continue
        image = clean_image(job, item)
        if batch and (image.shape != batch[0][1].shape or spec_of(job, item) is not spec_of(job, batch[0][0])):
            written += _flush(job, batch, group, psnrs, bar)  # a batch holds one size and one run
            batch = []
        batch.append((item, image))
        if len(batch) == job.batch_size or n == len(pending) - 1:
            written += _flush(job, batch, group, psnrs, bar)
            batch = []
    bar.close()
    return written


def _flush(job: BenchJob, batch: list[tuple[Item, Tensor]], group: Group, psnrs: list[float], bar: Any) -> int:
    """Restore and score one batch; returns how many records were written."""
    records = _restore_batch(job, batch, group)
    for record in records:
        if not record["failed"]:
            psnrs.append(record["psnr"])
        bar.update(1)
        bar.set_postfix(psnr=f"{np.mean(psnrs):.2f}" if psnrs else "-")
    return len(records)


def _skip(out: Path, item: Item, reason: str) -> None:
    tqdm.write(f"spgd bench: warning: skipped {item.path.name}: {reason}", file=sys.stderr)
    io.save_json({"name": item.path.name, "index": item.index, "skipped": reason},
                 result_path(out, RECORDS, item.path.stem))


def _restore_batch(job: BenchJob, batch: list[tuple[Item, Tensor]], group: Group) -> list[dict[str, Any]]:
    """Degrade, restore and score one batch; write and return each image's record."""
    items = [item for item, _ in batch]
    clean = torch.stack([image for _, image in batch])
    seeds = item_seeds(job, items)
    trace = Trace(keep_images=job.record, curves=job.record)  # without --record: failed steps only
    spec = spec_of(job, items[0])
    result = restore_batch(spec, seeds, clean=clean.to(spec.device), trace=trace, progress=group.rank == 0)
    records = []
    for k, item in enumerate(items):
        stem = item.path.stem
        if result.failed_steps[k] is None:
            io.save_image(result.restored[k], result_path(job.out, RESTORED, stem))
        io.save_image(result.preview[k], result_path(job.out, MEASUREMENTS, stem))
        if job.record:
            _save_trace(trace, k, result_path(job.out, TRACES, stem))
        failed_step = result.failed_steps[k]
        record = {"name": item.path.name, "index": item.index, "seed": seeds[k],
                  "failed": failed_step is not None, "failed_step": failed_step,
                  "reason": result.failed_reasons[k]}
        if not record["failed"]:
            record.update(_scores(job, result.restored[k], clean[k], job.lpips))
        io.save_json(record, result_path(job.out, RECORDS, stem))
        records.append(record)
    return records


def _save_trace(trace: Trace, k: int, path: Path) -> None:
    """Image k's part of a batch trace: per-step curves and x0hat as 8-bit images, without the states x."""
    saved: dict[str, Any] = {"sigma": torch.tensor(trace.sigma), "failed_step": trace.failed.get(k)}
    for name in ("loss", "angle_grad_score", "angle_grad_grad"):
        values = getattr(trace, name)
        if values:
            saved[name] = torch.stack([v[k] for v in values])
    if trace.x0hat:
        saved["x0hat"] = torch.stack([torch.from_numpy(io.to_uint8(to_image_range(x[k]))).permute(2, 0, 1)
                                      for x in trace.x0hat])
    buffer = bytes_io.BytesIO()
    torch.save(saved, buffer)
    io.atomic_write_bytes(path, buffer.getvalue())


def summarise(job: BenchJob, items: list[Item], duplicates: dict[str, str], settings: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's content from the per-image records: per image; mean, std (population), min and max
    over the images restored without failure; the failed and skipped ones with step and reason."""
    records, skipped = {}, dict(duplicates)
    for item in items:
        stem = item.path.stem
        record = read_record(job.out, stem)
        if is_finished(job.out, stem, job.record):
            if not record["failed"] and _lacks_scores(job, record):
                record = _add_scores(job, item, record)
            records[item.path.name] = record
        else:
            skipped[item.path.name] = (record or {}).get("skipped", "no result (the run was interrupted)")
    ok = [r for r in records.values() if not r["failed"]]
    summary = {}
    for key in _metric_keys(job):
        values = np.array([r[key] for r in ok if key in r], dtype=np.float64)
        if ok and len(values) == len(ok):
            summary[key] = {"mean": values.mean(), "std": values.std(), "min": values.min(), "max": values.max()}
    failed = {name: r["failed_step"] for name, r in records.items() if r["failed"]}
    counts = {"images": len(items) + len(duplicates), "restored": len(ok), "failed": len(failed),
              "skipped": len(skipped)}
    return {"settings": settings, "metric_space": job.metric_space, "crop_border": job.crop_border,
            "counts": counts, "summary": summary, "images": records, "failed": failed, "skipped": skipped}


def _metric_keys(job: BenchJob) -> tuple[str, ...]:
    return METRICS + Y_METRICS if job.metric_space == "y" else METRICS


def _lacks_scores(job: BenchJob, record: dict[str, Any]) -> bool:
    """Whether a result's record lacks LPIPS the run asks for, or Y-channel scores at the run's crop."""
    return ((job.lpips and "lpips" not in record)
            or (job.metric_space == "y" and ("psnr_y" not in record or record.get("crop_border") != job.crop_border)))


def _add_scores(job: BenchJob, item: Item, record: dict[str, Any]) -> dict[str, Any]:
    """The scores a result from a run with other metric options lacks, from its saved files."""
    clean = clean_image(job, item)
    restored = io.load_image(result_path(job.out, RESTORED, item.path.stem))
    record = {**record, **_scores(job, restored, clean, job.lpips and "lpips" not in record)}
    io.save_json(record, result_path(job.out, RECORDS, item.path.stem))
    return record


def _write_reports(job: BenchJob, items: list[Item], metrics: dict[str, Any]) -> None:
    io.save_json(metrics, job.out / "metrics.json")
    io.atomic_write_bytes(job.out / "metrics.md", markdown_table(metrics).encode())
    rows = []
    for item in items:
        stem = item.path.stem
        record = metrics["images"].get(item.path.name)
        if record is not None and not record["failed"] and len(rows) < GRID_ROWS:
            rows.append(grid_row(clean_image(job, item), io.load_image(result_path(job.out, MEASUREMENTS, stem)),
                                 io.load_image(result_path(job.out, RESTORED, stem)), record,
                                 _estimates(job, stem)))
    if rows:
        io.save_image(labelled_grid(rows).image, job.out / "grid.png")


def _estimates(job: BenchJob, stem: str) -> list[tuple[int, Tensor]]:
    """(step, x0 estimate in [0, 1]) at a few steps of a recorded image (none without --record)."""
    path = result_path(job.out, TRACES, stem)
    if not job.record or not path.is_file():
        return []
    x0hat = torch.load(path, map_location="cpu", weights_only=True).get("x0hat")
    if x0hat is None:
        return []
    return [(step, x0hat[step].float() / 255) for step in strip_positions(len(x0hat))]


def markdown_table(metrics: dict[str, Any]) -> str:
    """metrics.md: the summary (mean ± std, min, max over the restored images) and one row per image."""
    settings, summary, counts = metrics["settings"], metrics["summary"], metrics["counts"]
    keys = [k for k in METRICS + Y_METRICS if k in summary]
    lines = [f"# {settings['task']} · {settings['sampler']} · {Path(str(settings['model'])).name}", "",
             _row(["", *(f"{_label(k)} {'↓' if k == 'lpips' else '↑'}" for k in keys)]),
             "|---" * (len(keys) + 1) + "|",
             _row(["mean ± std", *(f"{_fmt(k, summary[k]['mean'])} ± {_fmt(k, summary[k]['std'])}" for k in keys)]),
             *(_row([stat, *(_fmt(k, summary[k][stat]) for k in keys)]) for stat in ("min", "max")), "",
             f"{counts['images']} images: {counts['restored']} restored, {counts['failed']} failed, "
             f"{counts['skipped']} skipped.{_convention(metrics)}", "",
             _row(["image", *(_label(k) for k in keys), "status"]), "|---" * (len(keys) + 2) + "|"]
    for name, r in metrics["images"].items():
        status = f"failed at step {r['failed_step']}" if r["failed"] else "ok"
        lines.append(_row([name, *(_fmt(k, r.get(k)) for k in keys), status]))
    lines += [_row([name, *([""] * len(keys)), f"skipped: {reason}"]) for name, reason in metrics["skipped"].items()]
    return "\n".join(lines) + "\n"


def _label(key: str) -> str:
    return key.upper().replace("_Y", "-Y")


def _convention(metrics: dict[str, Any]) -> str:
    if metrics.get("metric_space") != "y":
        return ""
    return (f" PSNR-Y/SSIM-Y: BT.601 luma (0..255) without {metrics['crop_border']} pixel(s) on each side; "
            "the others: RGB, whole images.")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _fmt(key: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if key.startswith("psnr") else f"{value:.4f}"
