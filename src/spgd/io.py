"""Image files <-> tensors, atomic writes, and grids a person can look at.

Tensors here are [0, 1] floats, CHW for one image and NCHW for a batch. The rules for the modes of
input files (`read_image`), and how a result is written back like its input (`save_image(..., like=)`):

- Size: an image over `MAX_IMAGE_PIXELS` (40 megapixels, the command line's and the page's cap) is
  refused from its header, before its pixels are decoded; so is an unreadable or truncated file.
- Orientation: an EXIF orientation tag is applied on load; results are written upright, without one.
- Grayscale (L, 1, I;16, I): the prior sees the gray channel replicated to RGB; the result is written
  as a one-channel PNG, the mean of the three restored channels (the gray image nearest to them).
- 16-bit: grayscale PNGs (I;16) are read at 16 bits (scaled by 1/65535) and written back at 16 bits;
  16-bit colour PNGs are read by Pillow at 8 bits per channel and written at 8.
- Palette (P) and other colour modes (CMYK, YCbCr, ...) are converted to RGB; results are RGB PNGs.
- Transparency (RGBA, LA, PA, or a tRNS colour): the alpha channel is kept and put back on the result
  (resized with the image). A pixel with alpha below `TRANSPARENT_BELOW` (128 of 255) is transparent:
  unknown to the restore, which only an operator taking unknown pixels can use (see `spgd.run`).
"""
from __future__ import annotations

import io
import json
import os
import re
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_IMAGE_PIXELS = 40_000_000  # the largest image (decoded pixels) spgd reads, on the command line and the page
TRANSPARENT_BELOW = 128  # alpha (of 255) under which a pixel is transparent: unknown to the restore
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N")
SIXTEEN_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # gray, read as I;16 ("I", 32-bit: clipped)
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
EXIF_ORIENTATION = 0x0112  # the EXIF tag `open_image` turns an image upright by


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


@dataclass
class InputImage:
    """An input file as the restore sees it (`pixels`: 3xHxW RGB in [0, 1]) and what its result needs to be
    written like it: one channel (`gray`), at `bits` per channel, with the file's `alpha` (1xHxW in [0, 1])."""

    pixels: Tensor
    gray: bool = False
    bits: int = 8
    alpha: Tensor | None = None

    def transparent(self) -> Tensor | None:
        """The transparent pixels (1xHxW bool, alpha below TRANSPARENT_BELOW of 255), or None if there are none."""
        if self.alpha is None:
            return None
        transparent = self.alpha * 255 < TRANSPARENT_BELOW - 0.5
        return transparent if bool(transparent.any()) else None

    def as_written(self, x: Tensor) -> Tensor:
        """A 3xHxW result as its file will hold it: for a gray input, the mean of its channels, replicated."""
        return x.mean(dim=0, keepdim=True).expand_as(x) if self.gray else x


def open_image(path: str | Path, what: str = "") -> Image.Image:
    """The decoded image in `path`, upright (its EXIF orientation applied), or an ImageError naming the file
    (`what` before its name, e.g. "mask file"): not found, not readable, truncated, or over MAX_IMAGE_PIXELS
    (refused from the header, before decoding)."""
    img, name = _open_header(path, what)
    with img:
        try:
            img.load()
            return ImageOps.exif_transpose(img)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"{name}: not a readable image ({exc})") from None


def image_size(path: str | Path, what: str = "") -> tuple[int, int]:
    """(H, W) of the image in `path` as `open_image` gives it (upright), from its header where the format
    allows; the errors of `open_image` for a missing, unreadable or oversized file."""
    img, name = _open_header(path, what)
    with img:
        try:  # a PNG's EXIF may follow its pixels: Pillow then decodes them to find it
            turned = img.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8)  # a quarter turn swaps the sides
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"{name}: not a readable image ({exc})") from None
        return (img.width, img.height) if turned else (img.height, img.width)


def _open_header(path: str | Path, what: str) -> tuple[Image.Image, str]:
    """The opened (not yet decoded) image in `path` and the name errors give it; over the cap: an ImageError."""
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    cap = f"spgd reads images of up to {MAX_IMAGE_PIXELS / 1e6:g} megapixels; downscale it first"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except FileNotFoundError:
        raise ImageError(f"{name}: file not found") from None
    except Image.DecompressionBombError as exc:  # Pillow's own cap, checked as it opens: above ours
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)) / 1e6:.0f} megapixels" if pixels else "too many pixels"
        raise ImageError(f"{name}: image has {size}: {cap}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: not a readable image ({exc})") from None
    if img.width * img.height > MAX_IMAGE_PIXELS:
        width, height = img.size
        img.close()
        raise ImageError(f"{name}: image is {width}x{height} (WxH), {width * height / 1e6:.0f} megapixels: {cap}")
    return img, name


def read_image(path: str | Path, size: int | tuple[int, int] | None = None, resize: bool = False,
               role: str = "model") -> InputImage:
    """An image file as an `InputImage`, following the rules of the module docstring.

    With `size` (side or (H, W)) a different size is an error unless `resize`, which centre-crops
    to the target aspect ratio and resizes with Lanczos filtering (the alpha channel with it). `role`
    names what needs that size in the message ("model", "measurement"); sizes are written WxH, as image
    viewers do.
    """
    path = Path(path)
    img = open_image(path)
    gray, bits = img.mode in GRAY_MODES, 16 if img.mode in SIXTEEN_BIT_MODES else 8
    if bits == 16:
        img = img if img.mode == "I;16" else img.convert("I;16")
    elif img.mode in ALPHA_MODES or "transparency" in img.info:
        img = img.convert("RGBA")
    else:
        img = img.convert("RGB")
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
        if img.size != (w, h):
            if not resize:
                raise ImageError(f"{path}: image is {img.width}x{img.height} (WxH), the {role} needs {w}x{h}; "
                                 "pass --resize (centre-crop and resize) or resize it first")
            img = center_crop_resize(img, (h, w))
    if bits == 16:
        gray_values = torch.from_numpy(np.asarray(img, dtype=np.float32) / 65535.0).clamp(0, 1)
        return InputImage(gray_values.expand(3, -1, -1).contiguous(), gray=True, bits=16)
    array = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
    alpha = array[3:].contiguous() if img.mode == "RGBA" else None
    return InputImage(array[:3].contiguous(), gray=gray, bits=8, alpha=alpha)


def load_image(path: str | Path, size: int | tuple[int, int] | None = None, resize: bool = False,
               role: str = "model") -> Tensor:
    """An image file as a 3xHxW RGB float tensor in [0, 1] (`read_image`'s pixels: any alpha dropped)."""
    return read_image(path, size, resize, role).pixels


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


def save_image(x: Tensor, path: str | Path, like: InputImage | None = None) -> None:
    """Save a 3xHxW [0, 1] tensor as a PNG, atomically: 8-bit RGB, or written `like` an input (gray as the mean
    of the channels, at its bits, with its alpha resized to x's size)."""
    if like is not None and like.gray:
        gray = torch.nan_to_num(x.detach().float().cpu().mean(dim=0), nan=0.0).clamp(0, 1).numpy()
        top, dtype = (65535, np.uint16) if like.bits == 16 else (255, np.uint8)
        img = Image.fromarray((gray * top).round().astype(dtype))
    else:
        img = Image.fromarray(to_uint8(x))
    if like is not None and like.alpha is not None:
        alpha = Image.fromarray(to_uint8(like.alpha)[..., 0])
        img.putalpha(alpha.resize(img.size, Image.BILINEAR) if alpha.size != img.size else alpha)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def save_array(x: Tensor, path: str | Path) -> None:
    """Save a tensor as a NumPy .npy file, atomically (what `load_kernel` and NumPy read back)."""
    buffer = io.BytesIO()
    np.save(buffer, x.detach().cpu().numpy())
    atomic_write_bytes(path, buffer.getvalue())


def map_picture(x: Tensor) -> Tensor:
    """A non-negative 2-D map (a blur kernel) as a 3xHxW [0, 1] picture, its largest value white."""
    x = x.detach().float().cpu().clamp(min=0)
    return (x / x.max().clamp(min=1e-30)).expand(3, *x.shape[-2:])


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


def raw_png(path: Path, width: int, height: int, scanlines: bytes = b"", bit_depth: int = 8,
            colour_type: int = 2) -> Path:
    """A PNG written by hand: its header (width x height; colour type 2 = RGB) and the filtered `scanlines`
    as its pixel data. With none, it claims a size it does not hold: an oversized image, cheaply (the files no
    encoder makes, which the tests and bench/bad_inputs.py check the size cap and 16-bit reading with)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines)) +
                     chunk(b"IEND", b""))
    return path
