"""`spgd serve`: a web page (Gradio) to restore one image at a time, with the run layer of `spgd restore`.

Every restore is a `spgd restore` run: `spgd.run.make_spec` resolves it and
`spgd.restore_job.run_restore` writes it into a fresh folder of its own (the restored PNG, the
measurement, grid.png, metrics.json, config.yaml), so the page's results are the command line's, byte
for byte. The page only adds what a person at a browser needs: uploads checked with the command line's
one-line messages, a progress bar with the data-fit loss, the current estimate x0 every few steps, a
cancel button that stops the sampler itself (a `Trace` whose `record` raises), a queue that runs one
restore per worker at a time, and downloads. As on the command line, an image is restored at its own
size (a fixed-size prior runs on tiles) unless the visitor ticks --resize; a painted mask is of the
image's size.

`WebApp` holds the handlers as plain Python (the unit tests call them directly); `build_page` wires
them to Gradio components. Nothing here is shared between visitors but the loaded models: each run
has its own folder, each visitor (Gradio session) its own cancel switch.

The model of a restore is the one `spgd restore` would load (`spgd.models.load_model`): a posterior
sampler restores with the chosen prior; a sampler that runs a trained restorer (`spgd.samplers.model_kind`,
e.g. diffir) with the chosen weights of its kind offered by `spgd serve --model FILE`, or with the built-in
ones for the task and the uploaded image's size (`BUILTIN`). A server that offers the built-in priors also
offers `BUILTIN` to the posterior samplers: the face prior for a 64x64 face, the natural-image prior for any
other size (`spgd.priors.loaders.choose_builtin_prior`), as `spgd restore` without --model.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import io
from .api import to_image_range
from .io import ImageError
from .priors import CheckpointError
from .priors.loaders import DEFAULT_PRIOR, FACE_SIZE, NATURAL_PRIOR
from .protocols import Denoiser
from .restore_job import RestoreJob, run_restore
from .models import clean_size, kind_of, load_file, load_model
from .run import RunSpec, make_spec, shown_value
from .samplers import SAMPLERS, DivergenceError, Trace, check_settings, model_kind, takes_reference
from .seeding import make_generators
from .tasks import LAYERS, default_task, load_task, parse_key_values, task_names
from .weights import MissingWeightsError, WeightsFetchError, WeightsIntegrityError, weights_path

log = logging.getLogger("spgd.web")

SIMULATE = "Degrade this clean image first (simulate, then score it)"
MEASURED = "This is already the measurement"
MASK_CANVAS = 768  # the longest side of the mask editor's canvas for a large image
BUILTIN = "built-in (chosen by the task and the image's size)"  # shipped weights: a prior's or a trained restorer's
MAX_UPLOAD_MB = 20  # per file
MAX_QUEUE = 32  # restores waiting at once; more are refused with Gradio's "queue is full"
POLL_S = 0.1  # how often the page's thread looks at the sampler's progress
PREVIEW_S = 0.5  # at most one refreshed estimate x0 per this many seconds
USER_ERRORS = (ValueError, FileNotFoundError, ImageError, CheckpointError, DivergenceError, WeightsFetchError,
               WeightsIntegrityError)


class PageError(Exception):
    """A problem the visitor can fix, as the one line the page shows (Gradio gets it as gr.Error)."""


class RestoreCancelled(Exception):
    """Raised inside the sampler's loop (from `ProgressTrace.record`) when the visitor cancels."""

    def __init__(self, step: int) -> None:
        super().__init__(f"cancelled after step {step}")
        self.step = step


class ProgressTrace(Trace):
    """A trace that records nothing but reports every step to `report(step, loss, estimate)` and stops
    the sampler, by raising `RestoreCancelled` from its own loop, once `cancel` is set.

    Samplers call `record(sigma, loss, x0hat, x, ...)` once per step when `curves` is true; `estimate`
    is image 0's x0hat (or the state, for samplers that record no x0hat) in [-1, 1], on the CPU.
    """

    def __init__(self, report: Callable[[int, float, Tensor | None], None], cancel: threading.Event) -> None:
        super().__init__(keep_images=False, keep_states=False, curves=True)
        self.report, self.cancel, self.steps = report, cancel, 0

    def record(self, sigma: float, loss: Tensor, x0hat: Tensor | None = None, x: Tensor | None = None,
               angle_grad_score: Tensor | None = None, angle_grad_grad: Tensor | None = None) -> None:
        if self.cancel.is_set():
            raise RestoreCancelled(self.steps)
        self.steps += 1
        estimate = x0hat if x0hat is not None else x
        if estimate is not None and estimate.dim() == 4:
            estimate = estimate[0].detach().float().to("cpu", copy=True)
        else:
            estimate = None
        self.report(self.steps, float(loss.detach().flatten()[0]), estimate)


@dataclass
class Progress:
    """The latest step of a running restore, written by the sampler's thread, read by the page's."""

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


@dataclass
class _Outcome:
    result: dict[str, Any] | None = None
    error: BaseException | None = None
    cancelled: int | None = None
    done: threading.Event = field(default_factory=threading.Event)


def _name(path: str | Path) -> str:
    return Path(path).name


def tidy(message: str, folders: Sequence[str | Path]) -> str:
    """`message` with the server's folders, and any folder below them, left out, so a visitor reads the file
    name they uploaded."""
    for folder in sorted({str(f).rstrip("/") for f in folders if f}, key=len, reverse=True):
        message = re.sub(re.escape(folder) + r"/(?:[^/\s]+/)*", "", message)
    return message


def safe_stem(name: str) -> str:
    """A file stem safe to write into a run folder, never one of the run's own files."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem).strip("._")[:64] or "image"
    return f"{stem}_image" if stem in ("grid", "metrics", "config") or stem.endswith("_measurement") else stem


def _megabytes(size: float) -> str:
    return f"{size / 2 ** 20:.1f} MB" if size >= 2 ** 20 / 10 else f"{size / 2 ** 10:.0f} KB"


def check_upload(path: str | Path, what: str = "image") -> None:
    """Refuse, with one line naming the file, an upload that is too large or not an image at all."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_UPLOAD_MB * 2 ** 20:
        raise PageError(f"{path.name}: the file is {_megabytes(size)}, too large: the page takes {what}s of up to "
                        f"{MAX_UPLOAD_MB:g} MB")
    if what != "image":
        return
    try:
        io.load_image(path)  # the command line's checks and words, the size cap (io.MAX_IMAGE_PIXELS) included
    except ImageError as exc:
        raise PageError(tidy(str(exc), [path.parent])) from None


def to_array(x: Tensor) -> np.ndarray:
    """A 3xHxW [0, 1] tensor as the HxWx3 uint8 array the page shows."""
    return io.to_uint8(x)


def view(path: str | Path, side: int = 1024) -> np.ndarray:
    """An image file as the page shows it: RGB (HxWx3 uint8, read by `io.load_image`'s rules, so 16-bit gray
    shows right), at most `side` pixels on its longer side."""
    img = Image.fromarray(to_array(io.load_image(path)))
    img.thumbnail((side, side), Image.LANCZOS)
    return np.asarray(img)


def upscale(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`array` (HxWx3 uint8) resized to (H, W) with nearest-neighbour, so pixels stay visible as pixels."""
    if array.shape[:2] == tuple(size):
        return array
    return np.asarray(Image.fromarray(array).resize((size[1], size[0]), Image.NEAREST))


def mask_from_drawing(drawing: Mapping[str, Any] | None, size: tuple[int, int]) -> np.ndarray | None:
    """The mask (HxW uint8, 255 = known pixel) of a drawing on the page's mask editor, or None if nothing
    is painted: painted pixels are the unknown ones. The editor's canvas is scaled to `size` (H, W); a
    model pixel counts as unknown when at least half of it is painted."""
    if not drawing:
        return None
    painted = None
    for layer in drawing.get("layers") or []:
        if layer is None:
            continue
        layer = np.asarray(layer)
        alpha = layer[..., 3] > 0 if layer.ndim == 3 and layer.shape[2] == 4 else layer.reshape(layer.shape[:2]) > 0
        painted = alpha if painted is None else painted | alpha
    if painted is None or not painted.any():
        return None
    coverage = Image.fromarray(painted.astype(np.uint8) * 255).resize((size[1], size[0]), Image.BOX)
    return np.where(np.asarray(coverage) >= 128, 0, 255).astype(np.uint8)


def kernel_image(kernel: Tensor, side: int = 128) -> np.ndarray:
    """A blur kernel (k x k, or 1 x k x k) as a visible image: scaled to its maximum, enlarged to `side`."""
    kernel = kernel.detach().float().cpu().reshape(-1, *kernel.shape[-2:])[0]
    gray = (kernel / kernel.max().clamp_min(1e-12)).clamp(0, 1)
    array = io.to_uint8(gray[None])
    return upscale(array, (side, side))


def progress_html(step: int, total: int | None, loss: float | None = None) -> str:
    """The page's progress bar: step of total, and the data-fit loss ||A(x0hat) - y||^2 of the last step."""
    if not total:
        return "<div class='spgd-progress'></div>"
    label = f"step {step}/{total}" + (f" · data-fit loss {loss:.4g}" if loss is not None else "")
    return (f"<div class='spgd-progress'><progress value='{min(step, total)}' max='{total}'></progress> "
            f"<span>{label}</span></div>")


def split_settings(text: str) -> list[str]:
    """'sigma_max=10, inner_steps=2' (commas, spaces or lines between) -> ['sigma_max=10', 'inner_steps=2']."""
    return [item for item in re.split(r"[\s,;]+", text or "") if item]


def check_task(task: str) -> str:
    """`task` if it is a task preset: a visitor chooses among the presets and never names a file of the server."""
    if task not in task_names():
        raise PageError(f"unknown task {task!r}; tasks: {', '.join(task_names())}")
    return task


def _side(model: Any) -> tuple[int, int]:
    """(H, W) of the images `model` restores: its size, or 256 when it states none (any size)."""
    size = getattr(model, "image_size", None) or 256
    return size, size


def _int(value: Any, label: str, minimum: int | None = None) -> int | None:
    if value is None or value == "":
        return None
    if float(value) != int(float(value)):
        raise PageError(f"{label} must be a whole number, got {value}")
    number = int(float(value))
    if minimum is not None and number < minimum:
        raise PageError(f"{label} must be >= {minimum}, got {number}")
    return number


class WebApp:
    """The page's handlers: plain functions of the form's values, one run folder per restore.

    `models`: the models a visitor may choose ({label: a loaded prior or trained restorer}; each serves the
    samplers of its kind, `spgd.run.kind_of`); `runs_dir`: where run folders are made (a fresh temporary
    folder by default); `workers`: restores that run at once (others wait).
    """

    def __init__(self, models: Mapping[str, Any], device: str = "cpu", runs_dir: str | Path | None = None,
                 workers: int = 1) -> None:
        if not models:
            raise ValueError("no prior to offer: pass --model FILE (the built-in faces64 prior is not shipped yet)")
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        self.models = dict(models)
        self.priors: dict[str, Denoiser] = {label: m for label, m in self.models.items() if kind_of(m) == "prior"}
        self._builtin: dict[str, Any] = {}  # built-in weights of trained restorers loaded so far, by name
        self.device = device
        self.runs_dir = Path(runs_dir) if runs_dir else Path(tempfile.mkdtemp(prefix="spgd-serve-"))
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.workers = workers
        self._slots = threading.BoundedSemaphore(workers)
        self._active: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ form helpers

    def image_size(self, model: str | None) -> tuple[int, int]:
        """(H, W) of the images the chosen model restores (256 for one of any size); for `BUILTIN`, those of
        an image resized for it (the face prior's, which `--resize` chooses)."""
        if model == BUILTIN:
            return FACE_SIZE, FACE_SIZE
        if model not in self.models:
            raise PageError(f"unknown model {model!r}; this server offers: {', '.join(self.models)}")
        return _side(self.models.get(model))

    def offers_builtin_priors(self) -> bool:
        """Whether the posterior samplers may let the image choose the built-in prior: the server offers the
        natural-image prior (`spgd serve` does when it ships)."""
        return NATURAL_PRIOR in self.priors

    def model_choices(self, sampler: str) -> list[str]:
        """The models a visitor may choose for `sampler`: the offered ones of its kind (the priors, for a
        posterior sampler), and the built-in weights (`BUILTIN`): last for a trained restorer; for a posterior
        sampler when the server offers the built-in priors, first unless a prior of the visitor's own comes
        first."""
        kind = model_kind(sampler)
        offered = [label for label, m in self.models.items() if kind_of(m) == kind]
        if kind != "prior":
            return [*offered, BUILTIN]
        if not self.offers_builtin_priors():
            return offered
        return [BUILTIN, *offered] if offered[0] in (DEFAULT_PRIOR, NATURAL_PRIOR) else [*offered, BUILTIN]

    def model(self, sampler: str, label: str | None, task: str, size: tuple[int, int] | None = None,
              resize: bool = False) -> Any:
        """The model a restore with `sampler` runs (`spgd.models.load_model`'s choice): the chosen model when it is
        of the sampler's kind; with `BUILTIN` (or, for a trained restorer, nothing) chosen, the built-in weights
        for `task` and clean images of `size` (H, W), loaded once per name. Anything else: a PageError."""
        kind, chosen = model_kind(sampler), self.models.get(label)
        if chosen is not None and kind_of(chosen) == kind:
            return chosen
        builtin = label == BUILTIN if kind == "prior" else label in (BUILTIN, None, "")
        if chosen is not None or not builtin or BUILTIN not in self.model_choices(sampler):
            what = f"is a {kind_of(chosen)} model" if chosen is not None else "is not offered here"
            choices = ", ".join(self.model_choices(sampler)) or "none on this server"
            raise PageError(f"model {label!r} {what}; {sampler} restores with: {choices}")
        try:
            return load_model(None, sampler, task, self.device, image_size=size, resize=resize, cache=self._builtin)
        except USER_ERRORS as exc:
            raise PageError(str(exc)) from None

    def show_input(self, path: str | None, model: str | None, resize: bool = False
                   ) -> tuple[np.ndarray | None, dict[str, Any] | None]:
        """The uploaded image as the page shows it, and the mask editor's canvas: the image itself (a mask is
        of its size), or with `resize` the image at the model's size (centre-cropped); small ones enlarged so
        that a mask is easy to paint, large ones shown at most MASK_CANVAS pixels wide or high (the painted
        mask is resampled to the image). Bad files: a PageError."""
        if not path:
            return None, None
        check_upload(path)
        if resize:
            height, width = self.image_size(model)
            fitted = to_array(io.load_image(path, (height, width), resize=True))
        else:
            fitted = view(path, MASK_CANVAS)
            height, width = fitted.shape[:2]
        factor = max(1, 256 // max(height, width))
        canvas = {"background": upscale(fitted, (height * factor, width * factor)), "layers": [], "composite": None}
        return view(path), canvas

    def task_form(self, task: str, sampler: str, model: str | None = None) -> dict[str, Any]:
        """What the form shows for `task`, `sampler` and the model `model` (default: the first offered for
        the sampler): whether the operator takes a mask and/or a kernel, whether its measurements are images,
        the steps and learning rate a restore runs with and the layer each comes from (`make_spec`, as
        `spgd tasks TASK` shows them), whether the sampler takes a reference image, and a note that names
        every setting not at the sampler's default and, for a trained restorer, its weights (or why there
        are none)."""
        check_task(task)
        label = model if model is not None else next(iter(self.model_choices(sampler)), None)
        try:
            chosen, problem = self.model(sampler, label, task, resize=True), ""
        except PageError as exc:
            chosen, problem = None, str(exc)
        spec = make_spec(chosen, task, sampler)
        rows, sources = spec.setting_rows(), {}
        for key, row in rows.items():
            sources.setdefault(row["from"], []).append(f"{key} {shown_value(row['value'])}")
        changed = "; ".join(f"{', '.join(keys)} ({source})" for source, keys in sources.items() if source != LAYERS[0])
        defaults = ", ".join(f"{key} {shown_value(row['value'])}" for key, row in rows.items())
        runs_with = changed or f"the defaults of {sampler} ({defaults})"
        note = load_task(task).get("description", "") + f". Runs with {runs_with}"
        if chosen is not None and kind_of(chosen) != "prior":
            note += f". Weights: {chosen.description}"
        elif label == BUILTIN:
            note += (f" (those of {DEFAULT_PRIOR}). The built-in prior is chosen by the image: {DEFAULT_PRIOR} for "
                     f"a {FACE_SIZE}x{FACE_SIZE} face or with the resize box ticked, {NATURAL_PRIOR} (with its own "
                     "recommended settings) for any other size")
        form: dict[str, Any] = {"mask": False, "kernel": False, "measured": True, "required": False,
                                "steps": spec.settings.get("steps"), "lr": spec.settings.get("lr"),
                                "steps_from": rows.get("steps", {}).get("from"), "lr_from": rows.get("lr", {}).get("from"),
                                "has_lr": "lr" in spec.settings, "reference": takes_reference(sampler), "note": note}
        try:
            if problem:
                raise PageError(problem)
            operator = spec.make_operator()
            getattr(chosen, "check_operator", lambda _: None)(operator)  # weights trained for another task
        except (PageError, *USER_ERRORS) as exc:
            form["note"] += f". This task cannot run here: {exc}"
            return form
        form["mask"] = hasattr(operator, "mask")
        form["kernel"] = hasattr(operator, "kernel")
        form["measured"] = operator.image_measurement
        missing = operator.unset_parameters()
        form["required"] = bool(missing)
        if missing:
            form["note"] += (f". A measurement needs its {' and '.join(missing)} (give it below); when simulating, "
                             "an unset one is drawn from the seed")
        if not operator.image_measurement:
            form["note"] += ". Its measurements are not images: simulate from a clean image"
        return form

    def draw_kernel(self, task: str, model: str, seed: Any) -> tuple[str, np.ndarray]:
        """Draw the task operator's kernel from the seed, as `--simulate` would draw it for image 0 with
        that seed; returns the kernel saved as .npy (for the kernel upload) and its picture."""
        seed = _int(seed, "Seed") or 0
        height, width = self.image_size(model)
        spec = self._spec_or_error(lambda: make_spec(self.models.get(model), check_task(task), device=self.device),
                                   [])
        operator = spec.make_operator()
        if not hasattr(operator, "kernel"):
            raise PageError(f"task {task}: its operator takes no blur kernel")
        x = torch.zeros(1, getattr(spec.prior, "image_channels", 3), height, width, device=spec.device)
        operator.draw(x, make_generators(seed, 1, "measure"))
        kernel = operator.params().get("kernel", getattr(operator, "kernel", None))
        if kernel is None:
            raise PageError(f"task {task}: its operator draws no kernel")
        kernel = kernel.detach().float().cpu().reshape(-1, *kernel.shape[-2:])[0]
        path = self.runs_dir / "drawn" / uuid.uuid4().hex[:12] / f"{task}_kernel_seed{seed}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, kernel.numpy())
        return str(path), kernel_image(kernel)

    def show_kernel(self, path: str | None) -> np.ndarray | None:
        """The picture of an uploaded kernel file; a file that is no kernel: a PageError."""
        if not path:
            return None
        check_upload(path, "kernel")
        try:
            return kernel_image(io.load_kernel(Path(path)))
        except USER_ERRORS as exc:
            raise PageError(tidy(str(exc), [Path(path).parent])) from None

    # ------------------------------------------------------------------ the restore

    def new_run_folder(self) -> Path:
        folder = self.runs_dir / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        return folder

    def _spec_or_error(self, build: Callable[[], RunSpec], folders: Sequence[str | Path]) -> RunSpec:
        try:
            return build()
        except PageError:
            raise
        except USER_ERRORS as exc:
            raise PageError(tidy(str(exc), folders)) from None

    @staticmethod
    def _keep(upload: str, folder: Path, folders: list[str | Path]) -> Path:
        """A copy of an uploaded file in the run's `folder`, under its own (safe) name."""
        folder.mkdir(parents=True, exist_ok=True)
        kept = folder / f"{safe_stem(_name(upload))}{Path(upload).suffix.lower()}"
        shutil.copyfile(upload, kept)
        folders += [Path(upload).parent, folder]
        return kept

    def prepare(self, req: RestoreRequest, run: Path) -> tuple[RestoreJob, list[str]]:
        """The `spgd restore` job of a request, its inputs copied into `run`/inputs; and notes for the page."""
        if not req.image:
            raise PageError("no image: upload one or use the demo face")
        check_upload(req.image)
        check_task(req.task)
        if req.sampler not in SAMPLERS:
            raise PageError(f"unknown sampler {req.sampler!r}; samplers: {', '.join(sorted(SAMPLERS))}")
        by_size = model_kind(req.sampler) != "prior" or req.model == BUILTIN  # built-in weights: by the clean size
        try:
            size = clean_size(req.task, req.image, req.mode == MEASURED) if by_size else None
        except USER_ERRORS as exc:
            raise PageError(tidy(str(exc), [Path(req.image).parent])) from None
        prior = self.model(req.sampler, req.model, req.task, size, bool(req.resize))
        inputs = run / "inputs"
        inputs.mkdir()
        image = inputs / f"{safe_stem(_name(req.image))}{Path(req.image).suffix.lower() or '.png'}"
        shutil.copyfile(req.image, image)
        folders = [Path(req.image).parent, inputs, run]
        notes: list[str] = []
        mask = kernel = None
        if req.mask_file:
            check_upload(req.mask_file, "mask")
            mask = self._keep(req.mask_file, inputs / "mask", folders)
            if mask_from_drawing(req.mask_drawing, (8, 8)) is not None:
                notes.append("the uploaded mask file is used, not the painted one")
        elif req.mask_drawing:
            try:  # a painted mask is of the size the image is restored at
                restored = _side(prior) if req.resize else size or clean_size(req.task, req.image,
                                                                              req.mode == MEASURED)
            except USER_ERRORS as exc:
                raise PageError(tidy(str(exc), [Path(req.image).parent])) from None
            drawn = mask_from_drawing(req.mask_drawing, restored)
            if drawn is not None:
                mask = inputs / "mask" / "painted.png"
                mask.parent.mkdir()
                Image.fromarray(drawn).save(mask)
        if req.kernel_file:
            check_upload(req.kernel_file, "kernel")
            kernel = self._keep(req.kernel_file, inputs / "kernel", folders)
        reference = None
        if req.reference_file:
            check_upload(req.reference_file, "reference image")
            reference = self._keep(req.reference_file, inputs / "reference", folders)

        def build() -> RunSpec:
            settings = parse_key_values(split_settings(req.extra), "--set")
            for key, label, value in (("steps", "--steps", _int(req.steps, "Steps", 1)),
                                      ("lr", "--lr", None if req.lr in (None, "") else float(req.lr))):
                if value is not None:
                    check_settings(req.sampler, {key: value}, label)
                    settings[key] = value
            return make_spec(prior, req.task, req.sampler, {}, settings, mask=mask, kernel=kernel,
                             reference=reference, device=self.device,
                             model_name=getattr(prior, "name", str(req.model)) if req.model == BUILTIN else str(req.model),
                             own_size=not req.resize)

        spec = self._spec_or_error(build, folders)
        seed = _int(req.seed, "Seed") or 0
        job = RestoreJob(inputs=[image], output=run, spec=spec, seed=seed, simulate=req.mode != MEASURED,
                         resize=bool(req.resize))
        return job, notes

    def restore(self, req: RestoreRequest, session: str = "",
                progress: Callable[..., Any] | None = None) -> Iterator[dict[str, Any]]:
        """Run one restore; yields what the page shows, as {output name: value}: "status" (Markdown),
        "live" (the current estimate x0), and at the end "before", "measurement", "restored", "slider",
        "metrics" and "files". User errors: PageError (the run folder is removed)."""
        cancel = threading.Event()
        with self._lock:
            earlier = self._active.get(session)
            if earlier is not None and session:
                earlier.set()  # one run per visitor: a new one replaces theirs
            self._active[session] = cancel
        run = self.new_run_folder()
        try:
            yield from self._restore(req, run, cancel, progress)
        except GeneratorExit:
            cancel.set()  # the page went away: stop the sampler too
            raise
        finally:
            with self._lock:
                if self._active.get(session) is cancel:
                    del self._active[session]

    def _restore(self, req: RestoreRequest, run: Path, cancel: threading.Event,
                 progress: Callable[..., Any] | None) -> Iterator[dict[str, Any]]:
        try:
            job, notes = self.prepare(req, run)
        except BaseException:
            shutil.rmtree(run, ignore_errors=True)
            raise
        total = int(job.spec.settings.get("steps") or 0) * int(job.spec.settings.get("mean_of", 1)) or None
        state, outcome = Progress(), _Outcome()
        worker = threading.Thread(target=self._work, args=(job, cancel, state, outcome), daemon=True,
                                  name=f"spgd-restore-{run.name}")
        worker.start()
        yield {"status": f"Restoring with {job.spec.sampler}{f' ({total} steps)' if total else ''} …", "live": None,
               "progress": progress_html(0, total)}
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
        if outcome.cancelled is not None:
            yield {"status": f"Cancelled at step {outcome.cancelled} of {total or '?'}; nothing was kept.",
                   "progress": progress_html(0, None)}
            return
        if outcome.error is not None:
            exc = outcome.error
            if isinstance(exc, USER_ERRORS):
                raise PageError(tidy(str(exc), [Path(req.image).parent, run])) from None
            log.error("restore failed:\n%s", "".join(traceback.format_exception(exc)))
            raise PageError(f"internal error ({type(exc).__name__}: {exc}); the server log has the details")
        yield {**self.results(job, outcome.result, notes, estimate), "progress": progress_html(step, total, loss)}

    def _work(self, job: RestoreJob, cancel: threading.Event, state: Progress, outcome: _Outcome) -> None:
        """The restore itself, on its own thread: one of `workers` slots at a time."""
        try:
            with self._slots:
                if cancel.is_set():
                    raise RestoreCancelled(0)
                outcome.result = run_restore(job, trace_factory=lambda: ProgressTrace(state.report, cancel))
        except RestoreCancelled as exc:
            outcome.cancelled = exc.step
            shutil.rmtree(job.output, ignore_errors=True)
        except BaseException as exc:  # reported on the page; the server goes on
            outcome.error = exc
            if not (job.output / "metrics.json").exists():
                shutil.rmtree(job.output, ignore_errors=True)
        finally:
            outcome.done.set()

    def results(self, job: RestoreJob, result: dict[str, Any], notes: list[str],
                estimate: Tensor | None) -> dict[str, Any]:
        """The page's view of a finished run, read back from the files `run_restore` wrote."""
        image = job.inputs[0]
        run = job.output
        entry = result["images"][image.name]
        restored = run / f"{image.stem}.png"
        measurement = run / f"{image.stem}_measurement.png"
        files = [str(p) for p in (restored, measurement, run / "grid.png", run / "metrics.json",
                                  run / "config.yaml") if p.is_file()]
        if job.simulate:
            before = to_array(io.load_image(image, (entry["height"], entry["width"]), job.resize))
        else:
            before = view(image)
        out: dict[str, Any] = {"before": before, "measurement": str(measurement), "files": files,
                               "live": to_array(to_image_range(estimate)) if estimate is not None else None}
        if entry["failed"]:
            out.update(status=f"**Failed**: {entry.get('reason', 'the restore failed')}. No restored image was "
                              "written; the measurement, grid.png, metrics.json and config.yaml are below.",
                       restored=None, slider=None, metrics=self.metrics_table(entry, None))
            return out
        restored_array = view(restored, side=1 << 16)  # exactly the file's pixels
        lpips = self.lpips(job, restored_array, (entry["height"], entry["width"])) if job.simulate else None
        slider_before = before if job.simulate else view(measurement, side=1 << 16)
        note = f" ({'; '.join(notes)})" if notes else ""
        out.update(status=f"Done: `{run.name}`{note}.", restored=str(restored),
                   slider=(upscale(slider_before, restored_array.shape[:2]), restored_array),
                   metrics=self.metrics_table(entry, lpips))
        return out

    @staticmethod
    def lpips(job: RestoreJob, restored: np.ndarray, size: tuple[int, int]) -> float | None:
        """LPIPS (AlexNet) of the restored PNG against the clean image (restored at `size`), if its weights are
        cached."""
        try:
            weights_path("lpips_alex")
        except MissingWeightsError:
            return None
        from .metrics import image_scores

        clean = io.load_image(job.inputs[0], size, job.resize)
        stored = torch.from_numpy(np.array(restored)).permute(2, 0, 1).float() / 255
        return image_scores(stored, clean, with_lpips=True)["lpips"]

    @staticmethod
    def metrics_table(entry: Mapping[str, Any], lpips: float | None) -> str:
        """The scores of one image as a Markdown table (metrics.json has PSNR and SSIM; LPIPS is the page's)."""
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

    def cancel(self, session: str = "") -> str:
        """Stop the visitor's running restore at the sampler's next step (its folder is removed)."""
        with self._lock:
            event = self._active.get(session)
        if event is None:
            return "Cancelled."
        event.set()
        return "Cancelled: the sampler stops at its next step; nothing of this run is kept."

    def running(self) -> int:
        with self._lock:
            return len(self._active)


# ---------------------------------------------------------------------- the Gradio page


def _gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise ValueError("spgd serve needs gradio: pip install 'spgd[web]'") from None
    return gradio


def _page_error(gr: Any, exc: PageError) -> Exception:
    return gr.Error(str(exc), duration=None, print_exception=False)


def build_page(app: WebApp) -> Any:
    """The Gradio Blocks of the page, wired to `app`'s handlers."""
    gr = _gradio()
    from .demo import DEMO_INPUTS, resolve_input

    samplers = sorted(SAMPLERS)
    offered = {kind_of(m) for m in app.models.values()}
    first = "spgd" if app.priors else next(s for s in samplers if model_kind(s) in offered)
    tasks, models = task_names(), app.model_choices(first)  # a server of trained restorers only opens on one
    with gr.Blocks(title="spgd: restore an image", analytics_enabled=False) as page:
        gr.Markdown("## spgd: restore an image with a diffusion prior\nUpload an image (or use the demo face), "
                    "choose the task and the sampler, press **Restore**. Each restore is an `spgd restore` run "
                    "of its own; its files are offered for download at the end.")
        with gr.Row():
            with gr.Column(scale=1, min_width=340):
                image_file = gr.File(label="Image (png, jpg, ...)", type="filepath", height=110,
                                     elem_id="image_file")
                demo = gr.Button(f"Use the demo face ({DEMO_INPUTS[0]})", size="sm", elem_id="demo")
                with gr.Row():
                    task = gr.Dropdown(tasks, value=default_task(), label="Task", elem_id="task")
                    sampler = gr.Dropdown(samplers, value=first, label="Sampler", elem_id="sampler")
                note = gr.Markdown(elem_id="task_note")
                mode = gr.Radio([SIMULATE, MEASURED], value=SIMULATE, label="The image is", elem_id="mode")
                resize = gr.Checkbox(False, label="Centre-crop and resize to the prior's size (--resize); "
                                     "unticked, the image is restored at its own size", elem_id="resize")
                with gr.Accordion("Mask (--mask)", open=False, visible=False) as mask_box:
                    gr.Markdown("Paint the unknown pixels on the image, or upload a mask image (white = known "
                                "pixels; it wins over a painted one). Without one, simulating draws the task's "
                                "mask from the seed.")
                    mask_drawing = gr.ImageEditor(label="Paint the unknown pixels", type="numpy",
                                                  image_mode="RGBA", sources=(), transforms=(), layers=False,
                                                  brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed",
                                                                 default_size=12),
                                                  height=320, elem_id="mask_drawing")
                    mask_file = gr.File(label="Mask image", type="filepath", height=100, elem_id="mask_file")
                with gr.Accordion("Blur kernel (--kernel)", open=False, visible=False) as kernel_box:
                    gr.Markdown("Upload one (.npy, .pt or an image), or draw one from the task's generator with "
                                "the seed: the kernel simulating with that seed would draw.")
                    with gr.Row(equal_height=True):
                        kernel_file = gr.File(label="Kernel file", type="filepath", height=120,
                                              elem_id="kernel_file")
                        kernel_view = gr.Image(label="Kernel", interactive=False, height=120, format="png",
                                               buttons=[], elem_id="kernel_view")
                    draw_kernel = gr.Button("Draw a kernel from the seed", size="sm", elem_id="draw_kernel")
                with gr.Accordion("Reference image (--reference)", open=False, visible=False) as reference_box:
                    gr.Markdown("An image the sampler steers its result toward (its settings say how, e.g. "
                                "init_steps=20 init_objective=l2 under Other settings).")
                    reference_file = gr.File(label="Reference image", type="filepath", height=100,
                                             elem_id="reference_file")
                with gr.Accordion("Model and settings", open=True):
                    model = gr.Dropdown(models, value=next(iter(models), None), label="Model (a prior, or a "
                                        "trained restorer's weights)", elem_id="model")
                    with gr.Row():
                        steps = gr.Number(None, label="Steps (--steps)", precision=0, min_width=90,
                                          elem_id="steps")
                        lr = gr.Number(None, label="Learning rate (--lr)", min_width=90, elem_id="lr")
                        seed = gr.Number(0, label="Seed (--seed)", precision=0, min_width=90, elem_id="seed")
                    extra = gr.Textbox(label="Other settings (--set key=value ...)", placeholder="sigma_max=10 "
                                       "inner_steps=2", elem_id="extra")
            with gr.Column(scale=2, min_width=440):
                with gr.Row():
                    run = gr.Button("Restore", variant="primary", elem_id="run")
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel")
                status = gr.Markdown("Ready.", elem_id="status")
                bar = gr.HTML(progress_html(0, None), elem_id="progress")
                with gr.Row(equal_height=True):
                    live = gr.Image(label="Current estimate x0", interactive=False, height=200, format="png",
                                    buttons=[], elem_id="live")
                    metrics = gr.Markdown(elem_id="metrics")
                with gr.Row():
                    before = gr.Image(label="Before", interactive=False, height=200, format="png", elem_id="before")
                    measurement = gr.Image(label="Measurement", interactive=False, height=200, type="filepath",
                                           format="png", elem_id="measurement")
                    restored = gr.Image(label="Restored", interactive=False, height=200, type="filepath",
                                        format="png", elem_id="restored")
                slider = gr.ImageSlider(label="Before / after", interactive=False, height=320, format="png",
                                        elem_id="slider")
                files = gr.File(label="Files of the run (restored PNG, measurement, grid.png, metrics.json, "
                                      "config.yaml)", file_count="multiple", interactive=False, elem_id="files")

        outputs = {"status": status, "progress": bar, "live": live, "before": before, "measurement": measurement,
                   "restored": restored, "slider": slider, "metrics": metrics, "files": files}

        def on_image(path: str | None, chosen: str, chosen_resize: bool) -> tuple[Any, Any]:
            try:
                return app.show_input(path, chosen, chosen_resize)
            except PageError as exc:
                raise _page_error(gr, exc) from None

        def on_task(chosen_task: str, chosen_sampler: str, chosen_model: str) -> tuple[Any, ...]:
            form = app.task_form(chosen_task, chosen_sampler, chosen_model)
            lr_info = (f"runs with {form['lr']:g} ({form['lr_from']})" if form["has_lr"]
                       else f"{chosen_sampler} has no learning rate")
            has_steps = form["steps"] is not None
            steps_info = (f"runs with {form['steps']} ({form['steps_from']})" if has_steps
                          else f"{chosen_sampler} has no steps")
            def box(shown: bool) -> Any:
                return gr.update(visible=True, open=form["required"]) if shown else gr.update(visible=False)

            return (box(form["mask"]), box(form["kernel"]), gr.update(visible=form["reference"]), form["note"],
                    gr.update(info=steps_info, interactive=has_steps, value=None),
                    gr.update(info=lr_info, interactive=form["has_lr"], value=None),
                    gr.update(value=SIMULATE) if not form["measured"] else gr.update())

        def on_sampler(chosen_sampler: str, chosen_model: str | None) -> Any:
            choices = app.model_choices(chosen_sampler)
            kept = chosen_model if chosen_model in choices else next(iter(choices), None)
            return gr.update(choices=choices, value=kept)

        def on_draw_kernel(chosen_task: str, chosen: str, chosen_seed: Any) -> tuple[Any, Any]:
            try:
                return app.draw_kernel(chosen_task, chosen, chosen_seed)
            except PageError as exc:
                raise _page_error(gr, exc) from None

        def on_kernel(path: str | None) -> Any:
            try:
                return app.show_kernel(path)
            except PageError as exc:
                raise _page_error(gr, exc) from None

        def on_run(image: str | None, chosen_task: str, chosen_mode: str, chosen_sampler: str, chosen_model: str,
                   chosen_steps: Any, chosen_lr: Any, chosen_seed: Any, chosen_resize: bool, chosen_extra: str,
                   chosen_mask: str | None, drawing: Any, chosen_kernel: str | None, chosen_reference: str | None,
                   request: gr.Request) -> Iterator[dict[Any, Any]]:
            req = RestoreRequest(image=image, task=chosen_task, mode=chosen_mode, sampler=chosen_sampler,
                                 model=chosen_model, steps=chosen_steps, lr=chosen_lr, seed=chosen_seed,
                                 resize=chosen_resize, extra=chosen_extra, mask_file=chosen_mask,
                                 mask_drawing=drawing, kernel_file=chosen_kernel, reference_file=chosen_reference)
            clear = {"live": None, "measurement": None, "restored": None, "slider": None, "metrics": "",
                     "files": None}
            try:
                first = True
                for update in app.restore(req, request.session_hash or ""):
                    if first:
                        update, first = {**clear, **update}, False
                    yield {outputs[k]: v for k, v in update.items()}
            except PageError as exc:
                yield {status: f"**Error**: {exc}", bar: progress_html(0, None)}
                raise _page_error(gr, exc) from None

        def on_cancel(request: gr.Request) -> tuple[str, str]:
            return app.cancel(request.session_hash or ""), progress_html(0, None)

        def on_leave(request: gr.Request) -> None:
            app.cancel(request.session_hash or "")

        for handler in (on_run, on_cancel, on_leave):  # the module's postponed annotations are strings Gradio
            handler.__annotations__ = {"request": gr.Request}  # cannot resolve: it finds gr.Request by this
        for trigger in (image_file.change, model.change, resize.change):
            trigger(on_image, [image_file, model, resize], [before, mask_drawing])
        demo.click(lambda: str(resolve_input(DEMO_INPUTS[0])), None, image_file)
        form_outputs = [mask_box, kernel_box, reference_box, note, steps, lr, mode]
        for trigger in (task.change, model.change):
            trigger(on_task, [task, sampler, model], form_outputs)
        sampler.change(on_sampler, [sampler, model], model).then(on_task, [task, sampler, model], form_outputs)
        page.load(on_task, [task, sampler, model], form_outputs)
        draw_kernel.click(on_draw_kernel, [task, model, seed], [kernel_file, kernel_view])
        kernel_file.change(on_kernel, kernel_file, kernel_view)
        running = run.click(on_run, [image_file, task, mode, sampler, model, steps, lr, seed, resize, extra,
                                     mask_file, mask_drawing, kernel_file, reference_file], list(outputs.values()),
                            concurrency_limit=app.workers, concurrency_id="restore", show_progress="full",
                            show_progress_on=[live])
        stop.click(on_cancel, None, [status, bar], queue=False, cancels=[running])
        page.unload(on_leave)
    return page


PAGE_CSS = """
.spgd-progress { display: flex; gap: 0.6em; align-items: center; min-height: 1.6em; }
.spgd-progress progress { flex: 1; height: 1em; accent-color: #f97316; }
#live img, #before img, #measurement img, #restored img, #kernel_view img, #slider img {
    image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
"""


def page_theme(gr: Any) -> Any:
    """Gradio's default look with the system's fonts (no font downloads: the page also works offline)."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def serve(models: Sequence[str], host: str = "127.0.0.1", port: int = 7860, arch: str | None = None,
          device: str = "cpu", runs_dir: str | Path | None = None, workers: int = 1) -> int:
    """Load the models (priors, and trained restorers' weight files), build the page and serve it until
    interrupted."""
    gr = _gradio()
    loaded = {str(name): load_file(name, arch, device=device) for name in models}
    app = WebApp(loaded, device=device, runs_dir=runs_dir, workers=workers)
    from .demo import DEMO_INPUTS, resolve_input

    demo_folder = resolve_input(DEMO_INPUTS[0]).parent
    page = build_page(app)
    page.queue(default_concurrency_limit=workers, max_size=MAX_QUEUE)
    print(f"spgd serve: models {', '.join(loaded)}; runs are written to {app.runs_dir}/runs/", flush=True)
    page.launch(server_name=host, server_port=port, ssr_mode=False, show_error=True, footer_links=[],
                allowed_paths=[str(app.runs_dir), str(demo_folder)], max_file_size=f"{MAX_UPLOAD_MB}mb",
                theme=page_theme(gr), css=PAGE_CSS)
    return 0
