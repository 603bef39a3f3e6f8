"""What the page does with files: uploads checked with the command line's one-line messages, pictures of
images, masks and kernels, and messages stripped of the server's folders."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image
from torch import Tensor

from .. import io
from ..io import ImageError
from ..priors import CheckpointError
from ..samplers import DivergenceError
from ..tasks import task_names
from ..weights import WeightsFetchError, WeightsIntegrityError

MAX_UPLOAD_MB = 20  # per file
USER_ERRORS = (ValueError, FileNotFoundError, ImageError, CheckpointError, DivergenceError, WeightsFetchError,
               WeightsIntegrityError)


class PageError(Exception):
    """A problem the visitor can fix, shown on the page in one line."""


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


def keep(upload: str | Path, folder: Path, folders: list[str | Path]) -> Path:
    """A copy of an uploaded file in `folder`, under its own (safe) name; both folders join `folders` (what
    `tidy` leaves out)."""
    folder.mkdir(parents=True, exist_ok=True)
    kept = folder / f"{safe_stem(Path(upload).name)}{Path(upload).suffix.lower() or '.png'}"
    shutil.copyfile(upload, kept)
    folders += [Path(upload).parent, folder]
    return kept


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


def check_task(task: str) -> str:
    """`task` if it is a task preset: a visitor chooses among the presets and never names a file of the server."""
    if task not in task_names():
        raise PageError(f"unknown task {task!r}; tasks: {', '.join(task_names())}")
    return task


def whole(value: Any, label: str, minimum: int | None = None) -> int | None:
    """A form's number as a whole number (None when empty); anything else: a PageError naming the field."""
    if value is None or value == "":
        return None
    if float(value) != int(float(value)):
        raise PageError(f"{label} must be a whole number, got {value}")
    number = int(float(value))
    if minimum is not None and number < minimum:
        raise PageError(f"{label} must be >= {minimum}, got {number}")
    return number


def split_settings(text: str) -> list[str]:
    """'sigma_max=10, inner_steps=2' (commas, spaces or lines between) -> ['sigma_max=10', 'inner_steps=2']."""
    return [item for item in re.split(r"[\s,;]+", text or "") if item]


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
    return upscale(io.to_uint8(gray[None]), (side, side))


def progress_html(step: int, total: int | None, loss: float | None = None) -> str:
    """The page's progress bar: step of total, and the data-fit loss ||A(x0hat) - y||^2 of the last step."""
    if not total:
        return "<div class='spgd-progress'></div>"
    label = f"step {step}/{total}" + (f" · data-fit loss {loss:.4g}" if loss is not None else "")
    return (f"<div class='spgd-progress'><progress value='{min(step, total)}' max='{total}'></progress> "
            f"<span>{label}</span></div>")
