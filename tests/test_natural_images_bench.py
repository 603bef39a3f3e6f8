"""bench/natural_images.py: every method on the same seeded measurement of each image at its own size,
scored the SR papers' way, each (method, image) kept once and reused on a rerun."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

import spgd
from spgd import io
from spgd.api import to_image_range
from spgd.baselines import classical_restore
from spgd.metrics import psnr_y

from .conftest import bench_script, write_face_like

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def natural():
    return bench_script("natural_images")


def test_rows_share_the_measurement_and_a_rerun_reuses_every_record(natural, tmp_path, tiny_prior_path, monkeypatch):
    for k, size in enumerate((48, 80)):
        (tmp_path / "sets" / "Tiny").mkdir(parents=True, exist_ok=True)
        write_face_like(tmp_path / "sets" / "Tiny" / f"img_{k}.png", size=size, seed=k)
    args = argparse.Namespace(root=tmp_path / "sets", sets=["Tiny"], limit=None, task="super_resolution", op=[],
                              diffir=[], prior=str(tiny_prior_path), samplers=["ddnm:steps=10"], lpips=False,
                              shard=(1, 2), out=tmp_path / "out")
    natural.run(args)  # the second of two shards: image 1 alone, with its own seed
    assert sorted(p.name for p in (tmp_path / "out" / "records" / "Tiny").glob("*/*.json")) == ["img_1.json"] * 3
    args.shard = (0, 1)
    report = natural.run(args)
    rows = report["sets"]["Tiny"]
    assert list(rows) == ["bicubic (spgd's LR)", "bicubic (MATLAB imresize, measured here)", "ddnm (steps=10)"]
    expected = []
    for k in range(2):  # the bicubic row by hand: seed k for image k, Y channel, 4 border pixels off
        clean = io.load_image(tmp_path / "sets" / "Tiny" / f"img_{k}.png")[None]
        op = spgd.make_operator("super_resolution", scale=4, noise_sigma=0.01)
        restored = to_image_range(classical_restore(spgd.simulate(clean, op, seed=[k]), op, "bicubic"))
        stored = torch.from_numpy(io.to_uint8(restored[0])).permute(2, 0, 1).float()[None] / 255
        expected.append(float(psnr_y(stored, clean, crop_border=4)[0]))
    assert rows["bicubic (spgd's LR)"]["psnr_y"] == pytest.approx(sum(expected) / 2, abs=1e-9)
    record = tmp_path / "out" / "records" / "Tiny" / "ddnm_steps-10" / "img_1.json"
    assert json.loads(record.read_text())["size"] == [80, 80]
    record.write_text(json.dumps({**json.loads(record.read_text()), "psnr_y": 99.0}))
    first = json.loads((record.parent / "img_0.json").read_text())["psnr_y"]
    again = natural.run(args)["sets"]["Tiny"]["ddnm (steps=10)"]  # nothing restored again: the records are read
    assert again["psnr_y"] == pytest.approx((first + 99.0) / 2, abs=1e-9)
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| SRCNN | 0.057M | - |" in table and "4 border pixels cropped" in table


def test_antithetic_runs_scores_the_twins_mean_of_runs_makes(tmp_path, tiny_prior_path):
    """bench/antithetic_runs.py builds each twin from the negated start by hand: its "2 antithetic" must be
    the library's antithetic mean of 2 (and "2 independent" its plain mean of 2) on the same measurement."""
    script = bench_script("antithetic_runs")
    (tmp_path / "imgs").mkdir()
    write_face_like(tmp_path / "imgs" / "a.png", size=72, seed=3)
    settings = ["steps=2", "inner_steps=1", "sigma_max=5.0"]
    args = argparse.Namespace(root=tmp_path / "imgs", prior=str(tiny_prior_path), runs=2, set=settings, out=tmp_path / "out")
    scores = script.run(args)["a"]
    clean = io.load_image(tmp_path / "imgs" / "a.png")[None]
    op = spgd.make_operator("super_resolution", scale=4, noise_sigma=0.01)
    y = spgd.simulate(clean, op, seed=[0])
    prior = spgd.load_prior(tiny_prior_path)
    spec = spgd.run.make_spec(prior, "super_resolution", sampler="spgd", own_size=True, tiling="shift",
                              settings={"steps": 2, "inner_steps": 1, "sigma_max": 5.0})
    for antithetic, name in ((True, "2 antithetic"), (False, "2 independent")):
        settings_now = {**spec.settings, "mean_of": 2, "antithetic": antithetic}
        mean = spgd.restore(y, op, prior, sampler="spgd", seed=[0], tiling="shift", progress=False, **settings_now)
        assert psnr_y(mean, clean, crop_border=4)[0].item() == pytest.approx(scores[name], abs=0.02)
    assert scores["2 antithetic"] != scores["2 independent"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.pt")) == ["a_run0+.pt", "a_run0-.pt", "a_run1+.pt"]
