"""Inpainting gives back the pixels the user gave: the known pixels of a measured photo come back
unchanged (8-bit files both ways), by default on the command line and the page, through the operator's
`with_measured` (never a branch on the task's name); `--no-keep-measured` / `keep_measured=False` return
the sampler's own result."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import spgd
from spgd.cli import main

from .conftest import write_face_like

FAST = ["--steps", "2", "--inner-steps", "1", "--set", "sigma_max=5.0", "mean_of=1", "--threads", "1"]


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.fixture
def damaged(tmp_path):
    """A 64x64 photo and a user's mask (white = known) with a hole in the middle."""
    photo = write_face_like(tmp_path / "damaged.png", seed=4)
    mask = np.full((64, 64), 255, np.uint8)
    mask[20:44, 16:40] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return photo, tmp_path / "mask.png", mask == 255


def test_a_users_known_pixels_come_back_unchanged(damaged, tmp_path, one_thread):
    photo, mask_file, known = damaged
    kept, free = tmp_path / "kept", tmp_path / "free"
    args = ["restore", "-t", "inpainting_box", "-i", str(photo), "--mask", str(mask_file), *FAST]
    assert main([*args, "-o", str(kept)]) == 0
    assert main([*args, "-o", str(free), "--no-keep-measured"]) == 0
    given, restored, sampled = pixels(photo), pixels(kept / "damaged.png"), pixels(free / "damaged.png")
    assert np.array_equal(restored[known], given[known])
    assert np.abs(sampled[known] - given[known]).max() > 8  # the sampler alone changes them
    assert np.array_equal(restored[~known], sampled[~known])  # the holes are the sampler's either way
    assert yaml.safe_load((kept / "config.yaml").read_text())["keep_measured"] is True
    assert yaml.safe_load((free / "config.yaml").read_text())["keep_measured"] is False


def test_keep_measured_asks_the_operator_and_leaves_other_operators_alone(one_thread):
    prior = spgd.load_prior()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    settings = {"steps": 2, "inner_steps": 1, "sigma_max": 5.0, "progress": False}
    box = spgd.make_operator("inpainting", kind="box", noise_sigma=0.05)
    y = spgd.simulate(x, box, seed=1)
    kept = spgd.restore(y, box, prior, seed=1, keep_measured=True, **settings)
    free = spgd.restore(y, box, prior, seed=1, **settings)
    known = box.mask.expand_as(x) > 0.5
    assert torch.equal(kept[known], ((y + 1) / 2).clamp(0, 1)[known])  # the measurement, noise included
    assert torch.equal(kept[~known], free[~known])
    blur = spgd.make_operator("gaussian_blur", kernel_size=9, std=2.0)
    assert blur.with_measured(x, blur.A(x)) is None
    y = spgd.simulate(x, blur, seed=1)
    assert torch.equal(spgd.restore(y, blur, prior, seed=1, keep_measured=True, **settings),
                       spgd.restore(y, blur, prior, seed=1, **settings))


def test_the_kept_pixels_benchmark_scores_known_pixels_holes_and_overall(tmp_path, one_thread):
    """bench/kept_pixels.py as a user runs it."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    data = tmp_path / "faces"
    data.mkdir()
    for seed in range(2):
        write_face_like(data / f"{seed}.png", seed=seed)
    done = subprocess.run([sys.executable, str(root / "bench" / "kept_pixels.py"), "--data", str(data), "--limit", "2",
                           "--tasks", "inpainting_box", "--set", "steps=2", "inner_steps=1", "sigma_max=5.0",
                           "mean_of=1", "--out", str(tmp_path / "kept.json")], cwd=root, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "kept.json").read_text())["results"]
    sampler, kept = results["inpainting_box"]["sampler"], results["inpainting_box"]["kept"]
    assert kept["holes"] == sampler["holes"]  # only the known pixels change
    assert kept["known"] > sampler["known"] + 5 and kept["overall"] > sampler["overall"]
    assert 30 < kept["known"] < 34  # the measurement's own noise (sigma 0.05 in [-1, 1]): about 32 dB
