"""grid.png of a run: labelled panels a person can read, whatever the image and measurement sizes.

Each row is one image: its panels (clean, measurement, restored) are drawn in cells of one size, the
restored image's size enlarged by a whole factor (nearest neighbour: no smoothing, pixels stay pixels)
until its short side is at least `min_side`; a panel of another shape (a 16x16 measurement, a phase
retrieval's spectrum) is enlarged with nearest neighbour to fit the cell, keeping its aspect ratio. A
label band above each panel names it, a caption band below it carries e.g. PSNR/SSIM. A row may
carry a strip of per-step estimates (x0 at a few steps) drawn below it in half-size cells.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from .io import to_uint8

FONT_SIZE = 16
BAND = FONT_SIZE + 8  # height of a label or caption band
GAP = 6  # between cells and around the grid
BACKGROUND, INK = (255, 255, 255), (0, 0, 0)
STRIP_CELLS = 8  # at most this many estimates per strip


@dataclass
class Panel:
    """One picture of a row: a 3xHxW (or 1xHxW) [0, 1] image, its label, and a caption under it ("": none)."""

    label: str
    image: Tensor
    caption: str = ""


@dataclass
class Row:
    """The panels of one image and, optionally, a strip of per-step estimates (panels labelled by step)."""

    panels: list[Panel]
    strip: list[Panel] = field(default_factory=list)


@dataclass
class Grid:
    """The grid as a 3xHxW [0, 1] image, and where each panel's picture went: (label, top, left, height, width)."""

    image: Tensor
    boxes: list[tuple[str, int, int, int, int]]


def cell_size(shape: Sequence[int], min_side: int) -> tuple[int, int]:
    """(H, W) of a cell for images of (H, W) `shape`: enlarged by the smallest whole factor that makes the
    short side at least `min_side` (never shrunk)."""
    height, width = shape
    factor = max(1, math.ceil(min_side / min(height, width)))
    return height * factor, width * factor


def strip_positions(steps: int, count: int = STRIP_CELLS) -> list[int]:
    """Up to `count` step indices spread evenly over 0..steps-1, the first and last included."""
    if steps <= count:
        return list(range(steps))
    return sorted({round(i * (steps - 1) / (count - 1)) for i in range(count)})


def grid_row(clean: Tensor | None, measurement: Tensor, restored: Tensor, entry: dict[str, Any],
             estimates: Sequence[tuple[int, Tensor]] = (), maps: Sequence[Panel] = ()) -> Row:
    """One image's row of grid.png: clean (when known), the measurement's preview and the restored image,
    with its scores (or why it failed) under it, then `maps`, panels of what was estimated with it (a blind
    blur's kernel); `estimates`, (step, x0 estimate) pairs, become its strip."""
    if entry.get("failed"):
        caption = f"failed at step {entry['failed_step']}" if entry.get("failed_step", -1) >= 0 else "failed"
    else:
        caption = ", ".join(f"PSNR {entry[k]:.2f} dB" if k == "psnr" else f"SSIM {entry[k]:.3f}"
                            for k in ("psnr", "ssim") if k in entry)
    panels = ([Panel("clean", clean)] if clean is not None else []) + [
        Panel("measurement", measurement), Panel("restored", restored, caption), *maps]
    return Row(panels, [Panel(f"x0, step {step + 1}", image) for step, image in estimates])


def labelled_grid(rows: Sequence[Row], reference: str = "restored", min_side: int = 256) -> Grid:
    """The grid of `rows`; the cells are sized from the first panel labelled `reference` (else the first panel)."""
    if not rows or not all(row.panels for row in rows):
        raise ValueError("a grid needs at least one row, each with at least one panel")
    sized = next((p for row in rows for p in row.panels if p.label == reference), rows[0].panels[0])
    cell_h, cell_w = cell_size(sized.image.shape[-2:], min_side)
    strip_h, strip_w = max(1, cell_h // 2), max(1, cell_w // 2)
    font = ImageFont.load_default(size=FONT_SIZE)
    row_w = [len(row.panels) * (cell_w + GAP) for row in rows] + [len(row.strip) * (strip_w + GAP) for row in rows]
    width = GAP + max(row_w)
    height = GAP + sum(2 * BAND + cell_h + GAP + ((2 * BAND + strip_h + GAP) if row.strip else 0) for row in rows)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    boxes: list[tuple[str, int, int, int, int]] = []
    top = GAP
    for row in rows:
        for panels, (h, w) in ((row.panels, (cell_h, cell_w)), (row.strip, (strip_h, strip_w))):
            if not panels:
                continue
            for k, panel in enumerate(panels):
                left = GAP + k * (w + GAP)
                boxes.append((panel.label, *_paste(canvas, panel.image, top + BAND, left, h, w)))
                _text(draw, panel.label, left, top, w, font)
                if panel.caption:
                    _text(draw, panel.caption, left, top + BAND + h, w, font)
            top += 2 * BAND + h + GAP
    array = np.asarray(canvas)
    return Grid(torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255, boxes)


def _paste(canvas: Image.Image, image: Tensor, top: int, left: int, height: int, width: int) -> tuple[int, ...]:
    """Enlarge `image` with nearest neighbour to fit (height, width), keeping its aspect ratio, centred."""
    picture = Image.fromarray(to_uint8(image))
    scale = min(height / picture.height, width / picture.width)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    picture = picture.resize(size, Image.NEAREST)
    y, x = top + (height - size[1]) // 2, left + (width - size[0]) // 2
    canvas.paste(picture, (x, y))
    return y, x, size[1], size[0]


def _text(draw: ImageDraw.ImageDraw, text: str, left: int, top: int, width: int, font: ImageFont.ImageFont) -> None:
    """`text` centred in a band of `width` at (left, top), cut with "…" if it does not fit."""
    while text and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…" if len(text) > 1 else ""
    x = left + (width - draw.textlength(text, font=font)) / 2
    draw.text((x, top + (BAND - FONT_SIZE) / 2), text, fill=INK, font=font)
