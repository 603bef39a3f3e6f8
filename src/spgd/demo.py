"""The demo face: the astronaut portrait (Eileen Collins, NASA, public domain) that ships with
scikit-image, cropped to the face the way UTKFace crops its faces. No network and no ../shared needed.

On the command line, `-i demo:astronaut` stands for it (a PNG written once into the cache).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from .io import atomic_write_bytes
from .weights import cache_dir

DEMO_INPUTS = ("demo:astronaut",)
ASTRONAUT_FACE_BOX = (165, 50, 285, 170)  # (left, top, right, bottom) in the 512x512 portrait


def astronaut_face() -> Image.Image:
    """The 120x120 face crop of scikit-image's astronaut portrait, as a PIL image."""
    from skimage import data

    return Image.fromarray(np.asarray(data.astronaut())).crop(ASTRONAUT_FACE_BOX)


def expand_inputs(items: Iterable[str]) -> list[str | Path]:
    """Command-line inputs with every `demo:` name replaced by its file."""
    return [resolve_input(item) if str(item).startswith("demo:") else item for item in items]


def resolve_input(name: str) -> Path:
    """The file behind a `demo:` input name, written into the cache on first use."""
    if name not in DEMO_INPUTS:
        raise ValueError(f"unknown demo input {name!r}; demo inputs: {', '.join(DEMO_INPUTS)}")
    path = cache_dir() / "demo" / "astronaut_face.png"
    if not path.is_file():
        import io

        buffer = io.BytesIO()
        astronaut_face().save(buffer, format="PNG")
        atomic_write_bytes(path, buffer.getvalue())
    return path
