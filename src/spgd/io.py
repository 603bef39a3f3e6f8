"""Image files <-> tensors, atomic writes, and grids a person can look at.

Tensors here are [0, 1] floats, CHW for one image and NCHW for a batch; files are 8-bit PNGs.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(ValueError):
    """An input image that cannot be used, with the file named."""


def list_images(paths: Iterable[str | Path]) -> list[Path]:
    """Image files from a mix of files and folders (folders: their images, sorted by name)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise ImageError(f"{p}: no such file or folder")
    return found


def load_image(path: str | Path, size: int | tuple[int, int] | None = None, resize: bool = False,
               role: str = "model") -> Tensor:
    """An RGB image as a 3xHxW float tensor in [0, 1].

    With `size` (side or (H, W)) a different size is an error unless `resize`, which centre-crops
    to the target aspect ratio and resizes with Lanczos filtering. `role` names what needs that
    size in the message ("model", "measurement"); sizes are written WxH, as image viewers do.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            img = img.convert("RGB")
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from None
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        if img.size != (w, h):
            if not resize:
                raise ImageError(f"{path}: image is {img.width}x{img.height} (WxH), the {role} needs {w}x{h}; "
                                 "pass --resize (centre-crop and resize) or resize it first")
            img = center_crop_resize(img, (h, w))
    array = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def load_kernel(path: Path) -> Tensor:
    """A blur kernel from .npy, .pt or an image file, normalised to sum 1."""
    try:
        if path.suffix == ".npy":
            kernel = torch.from_numpy(np.load(path)).float()
        elif path.suffix in (".pt", ".pth"):
            kernel = torch.as_tensor(torch.load(path, map_location="cpu", weights_only=True)).float()
        else:
            kernel = load_image(path).mean(dim=0)
    except ImageError:
        raise
    except Exception as exc:
        raise ValueError(f"{path}: cannot read the kernel ({type(exc).__name__})") from None
    kernel = kernel.squeeze()
    if kernel.dim() != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ValueError(f"{path}: a blur kernel must be a square 2-D array of odd size, got {tuple(kernel.shape)}")
    if not torch.isfinite(kernel).all() or kernel.min() < 0 or kernel.sum() <= 0:
        raise ValueError(f"{path}: kernel values must be finite, non-negative and not all zero")
    return kernel / kernel.sum()


def center_crop_resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre-crop `img` to the aspect ratio of size (H, W), then resize with Lanczos."""
    h, w = size
    scale = min(img.width / w, img.height / h)
    cw, ch = round(w * scale), round(h * scale)
    left, top = (img.width - cw) // 2, (img.height - ch) // 2
    return img.crop((left, top, left + cw, top + ch)).resize((w, h), Image.LANCZOS)


def to_uint8(x: Tensor) -> np.ndarray:
    """A 3xHxW (or 1xHxW) [0, 1] tensor -> HxWx3 uint8 array (NaN, a failed image, shows black)."""
    x = torch.nan_to_num(x.detach().float().cpu(), nan=0.0).clamp(0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file so that it is either absent or complete, never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results and caches are meant to be read and shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_image(x: Tensor, path: str | Path) -> None:
    """Save a 3xHxW [0, 1] tensor as an 8-bit PNG, atomically."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(x)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def save_json(obj: Any, path: str | Path) -> None:
    """Save JSON atomically (NaN written as null)."""
    text = json.dumps(_jsonable(obj), indent=2, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def load_keyed_json(path: str | Path, key: Any) -> dict[str, Any] | None:
    """The JSON object in `path` if its "key" equals `key` (compared as saved by `save_json`), else None
    (missing, unreadable or written for another key): a cached result serves only the settings it was
    computed with, and a stale one is recomputed, never used."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    wanted = json.loads(json.dumps(_jsonable(key), allow_nan=False))
    return data if isinstance(data, dict) and data.get("key") == wanted else None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, (np.floating, np.integer)):
        return _jsonable(obj.item())
    return obj


def image_grid(rows: Sequence[Sequence[Tensor]], pad: int = 2) -> Tensor:
    """Tile rows of 3xHxW [0, 1] images (sizes may differ; each cell is padded to the largest) into one image."""
    cells = [[c if c.shape[0] == 3 else c.expand(3, -1, -1) for c in row] for row in rows]
    cell_h = max(c.shape[1] for row in cells for c in row)
    cell_w = max(c.shape[2] for row in cells for c in row)
    ncols = max(len(row) for row in cells)
    grid = torch.ones(3, len(cells) * (cell_h + pad) + pad, ncols * (cell_w + pad) + pad)
    for r, row in enumerate(cells):
        for c, img in enumerate(row):
            top = pad + r * (cell_h + pad) + (cell_h - img.shape[1]) // 2
            left = pad + c * (cell_w + pad) + (cell_w - img.shape[2]) // 2
            grid[:, top: top + img.shape[1], left: left + img.shape[2]] = img.detach().float().cpu()
    return grid
