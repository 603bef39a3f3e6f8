"""Restores on the page: a form's request made into an `spgd restore` job (`spgd.plan`), run on a worker thread
with a progress report and a stop callback every Restorer honours, then shown from the files it wrote."""
from __future__ import annotations

import logging
import shutil
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .. import io
from ..api import to_image_range
from ..methods import check_settings
from ..plan import Request, make_plan
from ..restore_job import RestoreJob, run_restore
from ..protocols import Stopped
from ..samplers import Trace
from ..tasks import parse_key_values
from ..threads import set_threads
from ..weights import MissingWeightsError, weights_path
from .files import (USER_ERRORS, PageError, check_task, check_upload, keep, mask_from_drawing, progress_html,
                    safe_stem, split_settings, tidy, to_array, upscale, view, whole)
from .form import MEASURED, SIMULATE

log = logging.getLogger("spgd.web")

POLL_S = 0.1  # how often the page's thread looks at the restore's progress
PREVIEW_S = 0.5  # at most one refreshed estimate x0 per this many seconds


@dataclass
class RestoreRequest:
    """What the page's form holds when Restore is pressed (file paths are the uploads' temporary copies)."""

    image: str | None
    task: str
    mode: str = SIMULATE
    sampler: str = "spgd"
    model: str = ""
    steps: float | None = None
    lr: float | None = None
    seed: float | None = 0
    resize: bool = False
    extra: str = ""
    mask_file: str | None = None
    mask_drawing: Mapping[str, Any] | None = None
    kernel_file: str | None = None
    reference_file: str | None = None


class ProgressTrace(Trace):
    """A trace that records nothing but reports every step to `report(step, loss, estimate)`.

    Samplers call `record(sigma, loss, x0hat, x, ...)` once per step when `curves` is true; `estimate`
    is image 0's x0hat (or the state, for samplers that record no x0hat) in [-1, 1], on the CPU.
    """

    def __init__(self, report: Callable[[int, float, Tensor | None], None]) -> None:
        super().__init__(keep_images=False, keep_states=False, curves=True)
        self.report, self.steps = report, 0

    def record(self, sigma: float, loss: Tensor, x0hat: Tensor | None = None, x: Tensor | None = None,
               angle_grad_score: Tensor | None = None, angle_grad_grad: Tensor | None = None) -> None:
        self.steps += 1
        estimate = x0hat if x0hat is not None else x
        if estimate is not None and estimate.dim() == 4:
            estimate = estimate[0].detach().float().to("cpu", copy=True)
        else:
            estimate = None
        self.report(self.steps, float(loss.detach().flatten()[0]), estimate)


@dataclass
class Progress:
    """The latest step of a running restore, written by the restore's thread, read by the page's."""

    step: int = 0
    loss: float = float("nan")
    estimate: Tensor | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def report(self, step: int, loss: float, estimate: Tensor | None) -> None:
        with self.lock:
            self.step, self.loss = step, loss
            if estimate is not None:
                self.estimate = estimate

    def snapshot(self) -> tuple[int, float, Tensor | None]:
        with self.lock:
            return self.step, self.loss, self.estimate


@dataclass
class Outcome:
    result: dict[str, Any] | None = None
    error: BaseException | None = None
    stopped: int | None = None
    done: threading.Event = field(default_factory=threading.Event)


def prepare(req: RestoreRequest, run: Path, model: str | None, cache: dict[str, Any],
            device: str) -> tuple[RestoreJob, list[str]]:
    """The `spgd restore` job of a form (`model`: the request's, None for the built-in), its uploads copied
    into `run`/inputs; and notes for the page."""
    if not req.image:
        raise PageError("no image: upload one or use the demo face")
    check_upload(req.image)
    check_task(req.task)
    inputs, folders = run / "inputs", []
    image = keep(req.image, inputs, folders)
    notes: list[str] = []
    mask = kernel = reference = None
    if req.mask_file:
        check_upload(req.mask_file, "mask")
        mask = keep(req.mask_file, inputs / "mask", folders)
        if mask_from_drawing(req.mask_drawing, (8, 8)) is not None:
            notes.append("the uploaded mask file is used, not the painted one")
    if req.kernel_file:
        check_upload(req.kernel_file, "kernel")
        kernel = keep(req.kernel_file, inputs / "kernel", folders)
    if req.reference_file:
        check_upload(req.reference_file, "reference image")
        reference = keep(req.reference_file, inputs / "reference", folders)
    try:
        settings = parse_key_values(split_settings(req.extra), "--set")
        for key, label, value in (("steps", "--steps", whole(req.steps, "Steps", 1)),
                                  ("lr", "--lr", None if req.lr in (None, "") else float(req.lr))):
            if value is not None:
                check_settings(req.sampler, {key: value}, label)
                settings[key] = value
        request = Request(task=req.task, sampler=req.sampler, model=model, settings=settings, mask=mask,
                          kernel=kernel, reference=reference, simulate=req.mode != MEASURED,
                          resize=bool(req.resize), device=device)
        if mask is None and req.mask_drawing:  # a painted mask is of the size the image is restored at
            size = make_plan(request, [image], cache).groups[0].size
            drawn = mask_from_drawing(req.mask_drawing, size)
            if drawn is not None:
                request.mask = inputs / "mask" / "painted.png"
                request.mask.parent.mkdir()
                Image.fromarray(drawn).save(request.mask)
        plan = make_plan(request, [image], cache)
    except PageError:
        raise
    except USER_ERRORS as exc:
        raise PageError(tidy(str(exc), [Path(req.image).parent, inputs, run, *folders])) from None
    return RestoreJob(plan=plan, output=run, seed=whole(req.seed, "Seed") or 0), notes


class Runner:
    """Runs restores, `workers` at a time, one per visitor (a new one replaces theirs), each stoppable."""

    def __init__(self, runs_dir: Path, workers: int) -> None:
        self.runs_dir, self.workers = runs_dir, workers
        self._slots = threading.BoundedSemaphore(workers)
        self._active: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def new_run_folder(self) -> Path:
        folder = self.runs_dir / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        return folder

    def restore(self, prepare_job: Callable[[Path], tuple[RestoreJob, list[str]]], session: str = "",
                progress: Callable[..., Any] | None = None) -> Iterator[dict[str, Any]]:
        """Run one restore; yields what the page shows, as {output name: value}: "status" (Markdown), "live"
        (the current estimate x0), "progress", and at the end "before", "measurement", "restored", "slider",
        "metrics" and "files". User errors: PageError (the run folder is removed)."""
        stop = threading.Event()
        with self._lock:
            earlier = self._active.get(session)
            if earlier is not None and session:
                earlier.set()
            self._active[session] = stop
        run = self.new_run_folder()
        try:
            try:
                job, notes = prepare_job(run)
            except BaseException:
                shutil.rmtree(run, ignore_errors=True)
                raise
            yield from self._follow(job, notes, stop, progress)
        except GeneratorExit:
            stop.set()  # the page went away: stop the restore too
            raise
        finally:
            with self._lock:
                if self._active.get(session) is stop:
                    del self._active[session]

    def _follow(self, job: RestoreJob, notes: list[str], stop: threading.Event,
                progress: Callable[..., Any] | None) -> Iterator[dict[str, Any]]:
        settings = job.plan.groups[0].spec.settings
        total = int(settings.get("steps") or 0) * int(settings.get("mean_of", 1)) or None
        state, outcome = Progress(), Outcome()
        worker = threading.Thread(target=self._work, args=(job, stop, state, outcome), daemon=True,
                                  name=f"spgd-restore-{job.output.name}")
        worker.start()
        yield {"status": f"Restoring with {job.plan.request.sampler}{f' ({total} steps)' if total else ''} …",
               "live": None, "progress": progress_html(0, total)}
        reported, shown_at = 0, 0.0
        while not outcome.done.wait(POLL_S):
            step, loss, estimate = state.snapshot()
            if step == reported:
                continue
            if total and step > total:  # a sampler that reports more than its steps (DDNM's Mask-Shift: per tile)
                total = None
            reported, text = step, f"step {step}/{total or '?'} · data-fit loss {loss:.4g}"
            if progress is not None:
                progress((min(step, total or step), total), desc=text)
            now = time.monotonic()
            if now - shown_at >= PREVIEW_S:
                shown_at = now
                update = {"status": f"Restoring: {text}", "progress": progress_html(step, total, loss)}
                if estimate is not None:
                    update["live"] = to_array(to_image_range(estimate))
                yield update
        worker.join()
        step, loss, estimate = state.snapshot()
        if progress is not None and step != reported:
            progress((min(step, total or step), total), desc=f"step {step}/{total or '?'} · data-fit loss {loss:.4g}")
        if outcome.stopped is not None:
            yield {"status": f"Cancelled at step {step} of {total or '?'}; nothing was kept.",
                   "progress": progress_html(0, None)}
            return
        if outcome.error is not None:
            exc = outcome.error
            if isinstance(exc, USER_ERRORS):
                raise PageError(tidy(str(exc), [job.inputs[0].parent, job.output])) from None
            log.error("restore failed:\n%s", "".join(traceback.format_exception(exc)))
            raise PageError(f"internal error ({type(exc).__name__}: {exc}); the server log has the details")
        yield {**results(job, outcome.result, notes, estimate), "progress": progress_html(step, total, loss)}

    def _work(self, job: RestoreJob, stop: threading.Event, state: Progress, outcome: Outcome) -> None:
        """The restore itself, on its own thread: one of `workers` slots at a time."""
        try:
            with self._slots:
                if stop.is_set():
                    raise Stopped(0)
                set_threads(None)  # chosen again for every request: the cores other programs leave free now
                outcome.result = run_restore(job, trace_factory=lambda: ProgressTrace(state.report), stop=stop.is_set)
        except Stopped as exc:
            outcome.stopped = exc.step
            shutil.rmtree(job.output, ignore_errors=True)
        except BaseException as exc:  # reported on the page; the server goes on
            outcome.error = exc
            if not (job.output / "metrics.json").exists():
                shutil.rmtree(job.output, ignore_errors=True)
        finally:
            outcome.done.set()

    def cancel(self, session: str = "") -> str:
        """Stop the visitor's running restore at its next step (its folder is removed)."""
        with self._lock:
            event = self._active.get(session)
        if event is None:
            return "Cancelled."
        event.set()
        return "Cancelled: the restore stops at its next step; nothing of this run is kept."

    def running(self) -> int:
        with self._lock:
            return len(self._active)


def results(job: RestoreJob, result: dict[str, Any], notes: list[str], estimate: Tensor | None) -> dict[str, Any]:
    """The page's view of a finished run, read back from the files `run_restore` wrote."""
    image, run = job.inputs[0], job.output
    entry = result["images"][image.name]
    restored = run / f"{image.stem}.png"
    measurement = run / f"{image.stem}_measurement.png"
    refitted = [run / f"{image.stem}_{name}{suffix}" for name in entry.get("estimated_with_the_image", [])
                for suffix in (".png", ".npy")]
    files = [str(p) for p in (restored, measurement, *refitted, run / "grid.png", run / "metrics.json",
                              run / "config.yaml") if p.is_file()]
    size = (entry["height"], entry["width"])
    before = to_array(io.load_image(image, size, job.resize)) if job.simulate else view(image)
    out: dict[str, Any] = {"before": before, "measurement": str(measurement), "files": files,
                           "live": to_array(to_image_range(estimate)) if estimate is not None else None}
    if entry["failed"]:
        out.update(status=f"**Failed**: {entry.get('reason', 'the restore failed')}. No restored image was "
                          "written; the measurement, grid.png, metrics.json and config.yaml are below.",
                   restored=None, slider=None, metrics=metrics_table(entry, None))
        return out
    restored_array = view(restored, side=1 << 16)  # exactly the file's pixels
    lpips = _lpips(image, restored_array, size, job.resize) if job.simulate else None
    slider_before = before if job.simulate else view(measurement, side=1 << 16)
    note = f" ({'; '.join(notes)})" if notes else ""
    out.update(status=f"Done: `{run.name}` with {entry['model']}{note}.", restored=str(restored),
               slider=(upscale(slider_before, restored_array.shape[:2]), restored_array),
               metrics=metrics_table(entry, lpips))
    return out


def _lpips(image: Path, restored: np.ndarray, size: tuple[int, int], resize: bool) -> float | None:
    """LPIPS (AlexNet) of the restored PNG against the clean image, if its weights are cached."""
    try:
        weights_path("lpips_alex")
    except MissingWeightsError:
        return None
    from ..metrics import image_scores

    clean = io.load_image(image, size, resize)
    stored = torch.from_numpy(np.array(restored)).permute(2, 0, 1).float() / 255
    return image_scores(stored, clean, with_lpips=True)["lpips"]


def estimates_text(entry: Mapping[str, Any]) -> str:
    """What the run found out about one image, as Markdown: parameters estimated from the measurement (a noise
    level, a JPEG's quality) and those estimated with the image (a blind blur's kernel, among the files)."""
    lines = []
    if entry.get("estimated"):
        lines.append("Estimated from the image: " + ", ".join(f"{key} {value}" for key, value in entry["estimated"].items()))
    for name in entry.get("estimated_with_the_image", []):
        score = f" (MNC {entry[name + '_mnc']:.3f} against the simulated one)" if f"{name}_mnc" in entry else ""
        lines.append(f"Estimated with the image: its {name}{score}, in the grid and the files below.")
    return "\n\n".join(lines)


def metrics_table(entry: Mapping[str, Any], lpips: float | None) -> str:
    """The scores of one image as a Markdown table (metrics.json has PSNR and SSIM; LPIPS is the page's), after
    what was estimated (`estimates_text`)."""
    found = estimates_text(entry)
    return f"{found}\n\n{_scores_table(entry, lpips)}" if found else _scores_table(entry, lpips)


def _scores_table(entry: Mapping[str, Any], lpips: float | None) -> str:
    if "psnr" not in entry:
        return "No scores: the input was a measurement (no clean image to compare with)."
    head, row = ["PSNR (dB) ↑", "SSIM ↑"], [f"{entry['psnr']:.2f}", f"{entry['ssim']:.4f}"]
    if lpips is not None:
        head.append("LPIPS ↓")
        row.append(f"{lpips:.4f}")
    text = f"| {' | '.join(head)} |\n|{'---|' * len(head)}\n| {' | '.join(row)} |"
    if lpips is None:
        text += "\n\nLPIPS: its weights are not cached (`spgd weights fetch`)."
    return text


__all__ = ["Outcome", "Progress", "ProgressTrace", "RestoreRequest", "Runner", "metrics_table", "prepare", "results",
           "safe_stem"]
