"""grid.png is readable: panels enlarged without smoothing to at least 256 px on their short side, the
measurement at the restored image's size, labels above and scores below, for any image or measurement
shape; `spgd bench --record` adds a strip of x0 estimates."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

from spgd.cli import main
from spgd.grids import BAND, GAP, Panel, Row, cell_size, labelled_grid, strip_positions

from .conftest import write_face_like

FAST = ["--steps", "2", "--inner-steps", "1", "--set", "sigma_max=5.0", "mean_of=1", "--threads", "1"]


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_the_readmes_first_command_gives_a_readable_labelled_grid(tmp_path, one_thread):
    out = tmp_path / "demo"
    assert main(["restore", "-t", "super_resolution", "--simulate", "-i", "demo:astronaut", "--resize",
                 "-o", str(out), *FAST]) == 0
    grid = pixels(out / "grid.png")
    assert grid.shape[1] >= 768 and grid.shape[0] >= 256
    cell = 256  # 64x64 enlarged 4x
    for k, name in enumerate(["clean", "astronaut_face_measurement", "astronaut_face"]):
        left, top = GAP + k * (cell + GAP), GAP + BAND
        panel = grid[top: top + cell, left: left + cell]
        if name != "clean":  # the restored image and the 16x16 measurement, each pixel a 4x4 or 16x16 block
            image = pixels(out / f"{name}.png")
            factor = cell // image.shape[0]
            assert np.array_equal(panel, image.repeat(factor, 0).repeat(factor, 1)), name
        label = grid[GAP: GAP + BAND, left: left + cell]
        assert (label < 100).any() and (label == 255).mean() > 0.7  # dark text on a white band
    caption = grid[GAP + BAND + cell: GAP + 2 * BAND + cell, GAP + 2 * (cell + GAP): GAP + 3 * (cell + GAP)]
    assert (caption < 100).any()  # PSNR/SSIM under the restored panel
    assert json.loads((out / "metrics.json").read_text())["images"]["astronaut_face.png"]["psnr"] > 0


def test_cells_take_any_image_and_measurement_shape():
    assert cell_size((64, 64), 256) == (256, 256)
    assert cell_size((200, 300), 256) == (400, 600)  # the short side reaches 256 by a whole factor
    assert cell_size((1024, 768), 256) == (1024, 768)  # never shrunk
    restored = torch.rand(3, 40, 60)
    wide = torch.rand(3, 5, 30)  # a measurement of another aspect ratio keeps it, fitted into the cell
    grid = labelled_grid([Row([Panel("measurement", wide), Panel("restored", restored, "PSNR 1.00 dB")])])
    boxes = {label: box for label, *box in grid.boxes}
    assert boxes["restored"][2:] == [280, 420] and boxes["measurement"][2:] == [70, 420]
    top, left, height, width = boxes["measurement"]
    shown = (grid.image[:, top: top + height, left: left + width] * 255).round()
    assert torch.equal(shown, (wide * 255).round().repeat_interleave(14, 1).repeat_interleave(14, 2))
    gray = labelled_grid([Row([Panel("restored", torch.rand(1, 16, 16))])])
    assert gray.image.shape == (3, GAP + 2 * BAND + 256 + GAP, GAP + 256 + GAP)
    assert strip_positions(3) == [0, 1, 2] and strip_positions(100) == [0, 14, 28, 42, 57, 71, 85, 99]


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="--record plots need matplotlib")
def test_bench_record_adds_a_strip_of_x0_estimates(tmp_path, one_thread):
    data = tmp_path / "faces"
    data.mkdir()
    write_face_like(data / "a.png")
    for record, out in ((False, tmp_path / "plain"), (True, tmp_path / "recorded")):
        assert main(["bench", "-t", "inpainting_random", "--data", str(data), "--out", str(out),
                     *(["--record"] if record else []), *FAST[:2], "--inner-steps", "1", "--set", "sigma_max=5.0",
                     "--threads", "1"]) == 0
    plain, recorded = pixels(tmp_path / "plain" / "grid.png"), pixels(tmp_path / "recorded" / "grid.png")
    assert plain.shape[0] == GAP + 2 * BAND + 256 + GAP
    assert recorded.shape[0] == plain.shape[0] + 2 * BAND + 128 + GAP  # one strip of half-size cells
    assert np.array_equal(recorded[: plain.shape[0], : plain.shape[1]], plain)
    strip = recorded[plain.shape[0] + BAND: plain.shape[0] + BAND + 128, GAP: GAP + 128]
    assert strip.std() > 0  # an estimate, not the background
