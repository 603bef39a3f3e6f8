"""Demo inputs that ship with scikit-image, so a first run needs no network and no ../shared: the astronaut
portrait (Eileen Collins, NASA, public domain) cropped to the face the way UTKFace crops its faces, and
the coffee cup photo (600x400, Rachel Michetti, CC0) at its native size, for a restore at the image's size.

On the command line, `-i demo:astronaut` or `-i demo:coffee` stands for it (a PNG written once into the cache).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from .io import atomic_write_bytes
from .weights import cache_dir

ASTRONAUT_FACE_BOX = (165, 50, 285, 170)  # (left, top, right, bottom) in the 512x512 portrait


def astronaut_face() -> Image.Image:
    """The 120x120 face crop of scikit-image's astronaut portrait, as a PIL image."""
    from skimage import data

    return Image.fromarray(np.asarray(data.astronaut())).crop(ASTRONAUT_FACE_BOX)


def coffee() -> Image.Image:
    """scikit-image's coffee cup photo, 600x400 (WxH), as a PIL image."""
    from skimage import data

    return Image.fromarray(np.asarray(data.coffee()))


DEMOS: dict[str, tuple[str, Callable[[], Image.Image]]] = {  # name: (file in the cache, what draws it)
    "demo:astronaut": ("astronaut_face.png", astronaut_face),
    "demo:coffee": ("coffee.png", coffee),
}
DEMO_INPUTS = tuple(DEMOS)  # the first is the page's demo face


def expand_inputs(items: Iterable[str]) -> list[str | Path]:
    """Command-line inputs with every `demo:` name replaced by its file."""
    return [resolve_input(item) if str(item).startswith("demo:") else item for item in items]


def resolve_input(name: str) -> Path:
    """The file behind a `demo:` input name, written into the cache on first use."""
    if name not in DEMOS:
        raise ValueError(f"unknown demo input {name!r}; demo inputs: {', '.join(DEMO_INPUTS)}")
    file, draw = DEMOS[name]
    path = cache_dir() / "demo" / file
    if not path.is_file():
        import io

        buffer = io.BytesIO()
        draw().save(buffer, format="PNG")
        atomic_write_bytes(path, buffer.getvalue())
    return path
