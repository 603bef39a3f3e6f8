"""`spgd.harness` (methods x images -> records -> table) and the bench scripts built on it, run as a user runs
them (a subprocess: tests never import a script of bench/)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import spgd
from spgd import harness, io
from spgd.api import to_image_range
from spgd.baselines import classical_restore
from spgd.harness import Method
from spgd.metrics import image_scores, psnr_b, psnr_y
from spgd.run import make_spec

from .conftest import write_face_like

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
SR = {"name": "super_resolution", "scale": 4, "noise_sigma": 0.01}


def bench(script: str, *args: str) -> None:
    """Run bench/<script> as a user does, from the repository root."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def images(folder: Path, sizes=(48, 80)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [write_face_like(folder / f"img_{k}.png", size=size, seed=k) for k, size in enumerate(sizes)]


def test_every_method_restores_the_same_measurement_and_a_rerun_reuses_every_record(tmp_path):
    files, seen = images(tmp_path / "Tiny"), {}

    def remember(name):
        def restore(y, op, clean, k):
            seen.setdefault((name, k), y.clone())
            return to_image_range(classical_restore(y, op, "bicubic"))
        return restore

    methods = {"a": Method(remember("a")), "b (x, y)": Method(remember("b"), 1e6),
               "own": Method(remember("own"), measurement="own")}
    own = {"own": lambda clean, k: torch.zeros(1, 3, clean.shape[-2] // 4, clean.shape[-1] // 4)}
    score = lambda restored, clean: image_scores(restored, clean)  # noqa: E731
    harness.run(tmp_path / "out", {"Tiny": files}, methods, SR, score, measurements=own, shard=(1, 2), log=print)
    assert sorted(p.parent.name + "/" + p.name for p in (tmp_path / "out/records/Tiny").glob("*/*.json")) == [
        "a/img_1.json", "b_x_y/img_1.json", "own/img_1.json"]  # the second of two shards: image 1 alone
    records = harness.run(tmp_path / "out", {"Tiny": files}, methods, SR, score, measurements=own, log=print)
    for k in range(2):  # seed k for image k, one measurement for every method that restores it
        expected = spgd.simulate(io.load_image(files[k])[None], spgd.make_operator(**SR), seed=[k])
        assert torch.equal(seen["a", k], expected) and torch.equal(seen["b", k], expected)
        assert not seen["own", k].any()
    assert [r["image"] for r in records["Tiny"]["a"]] == ["img_0.png", "img_1.png"]
    assert records["Tiny"]["a"][1]["size"] == [80, 80]
    record = harness.record_path(tmp_path / "out", "Tiny", "a", "img_1")
    record.write_text(json.dumps({**json.loads(record.read_text()), "psnr": 99.0}))
    seen.clear()
    again = harness.run(tmp_path / "out", {"Tiny": files}, methods, SR, score, measurements=own, log=print)
    assert not seen  # nothing restored again: the records are read
    row = harness.summarise(again["Tiny"]["a"])
    assert row["psnr"] == pytest.approx((records["Tiny"]["a"][0]["psnr"] + 99.0) / 2, abs=1e-9)
    assert row["images"] == 2 and row["gmacs"] is None and set(row) >= {"ssim", "seconds", "psnr_std"}


def test_natural_images_rows_share_the_measurement_scored_the_sr_papers_way(tmp_path, tiny_prior_path):
    files = images(tmp_path / "sets" / "Tiny")
    out = tmp_path / "out"
    common = ["--root", str(tmp_path / "sets"), "--sets", "Tiny", "--prior", str(tiny_prior_path), "--samplers",
              "ddnm:steps=10", "--out", str(out)]
    bench("natural_images.py", *common, "--shard", "1/2")
    assert sorted(p.name for p in (out / "records" / "Tiny").glob("*/*.json")) == ["img_1.json"] * 3
    bench("natural_images.py", *common)
    rows = json.loads((out / "results.json").read_text())["sets"]["Tiny"]
    assert list(rows) == ["bicubic (spgd's LR)", "bicubic (MATLAB imresize, measured here)", "ddnm (steps=10)"]
    expected = []
    for k in range(2):  # the bicubic row by hand: seed k for image k, Y channel, 4 border pixels off
        clean = io.load_image(files[k])[None]
        op = spgd.make_operator(**SR)
        restored = to_image_range(classical_restore(spgd.simulate(clean, op, seed=[k]), op, "bicubic"))
        stored = torch.from_numpy(io.to_uint8(restored[0])).permute(2, 0, 1).float()[None] / 255
        expected.append(float(psnr_y(stored, clean, crop_border=4)[0]))
    assert rows["bicubic (spgd's LR)"]["psnr_y"] == pytest.approx(sum(expected) / 2, abs=1e-9)
    table = (out / "results.md").read_text()
    assert "| SRCNN | 0.057M | - |" in table and "4 border pixels cropped" in table


def test_antithetic_runs_scores_the_twins_mean_of_runs_makes(tmp_path, tiny_prior_path):
    """bench/antithetic_runs.py builds each twin from the negated start by hand: its "2 antithetic" must be
    the library's antithetic mean of 2 (and "2 independent" its plain mean of 2) on the same measurement."""
    (tmp_path / "imgs").mkdir()
    write_face_like(tmp_path / "imgs" / "a.png", size=72, seed=3)
    bench("antithetic_runs.py", "--root", str(tmp_path / "imgs"), "--prior", str(tiny_prior_path), "--runs", "2",
          "--set", "steps=2", "inner_steps=1", "sigma_max=5.0", "--out", str(tmp_path / "out"))
    scores = json.loads((tmp_path / "out" / "results.json").read_text())["images"]["a"]
    clean = io.load_image(tmp_path / "imgs" / "a.png")[None]
    op = spgd.make_operator(**SR)
    y = spgd.simulate(clean, op, seed=[0])
    prior = spgd.load_prior(tiny_prior_path)
    spec = make_spec(prior, "super_resolution", sampler="spgd", own_size=True, tiling="shift",
                     settings={"steps": 2, "inner_steps": 1, "sigma_max": 5.0})
    for antithetic, name in ((True, "2 antithetic"), (False, "2 independent")):
        settings_now = {**spec.settings, "mean_of": 2, "antithetic": antithetic}
        mean = spgd.restore(y, op, prior, sampler="spgd", seed=[0], tiling="shift", progress=False, **settings_now)
        assert psnr_y(mean, clean, crop_border=4)[0].item() == pytest.approx(scores[name], abs=0.02)
    assert scores["2 antithetic"] != scores["2 independent"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.pt")) == ["a_run0+.pt", "a_run0-.pt", "a_run1+.pt"]


def test_the_jpeg_script_scores_the_decoded_file_the_field_s_way(tmp_path):
    """bench/jpeg.py: the decode row is the libjpeg file of the image, its PSNR-B the luma's, in its table."""
    files = images(tmp_path / "photos", sizes=(48, 64))
    bench("jpeg.py", "--sets", str(tmp_path / "photos"), "--qualities", "20", "--out", str(tmp_path / "jpeg"))
    clean = io.load_image(files[0])[None]
    decoded = (spgd.make_operator("jpeg", quality=20).measure(clean * 2 - 1) + 1) / 2
    record = json.loads((tmp_path / "jpeg" / "records" / "photos q20" / "decode" / "img_0.json").read_text())
    assert abs(record["psnr_b"] - float(psnr_b(decoded.double(), clean.double()))) < 1e-6
    assert record["psnr_b"] <= record["psnr_y"] + 1e-9  # the blocking factor only lowers it
    assert "| photos q20 | decode |" in (tmp_path / "jpeg" / "results.md").read_text()


def test_the_denoising_script_adds_the_seeded_noise_and_its_rerun_restores_nothing(tmp_path):
    """bench/denoising.py: the noisy row is the seeded noise, the published rows stand beside the measured ones,
    and a rerun reuses every record (CBM3D: the `bm3d` package of the test extra)."""
    pytest.importorskip("bm3d", reason="bench/denoising.py scores CBM3D: pip install bm3d (in the test extra)")
    images(tmp_path / "photos", sizes=(48, 64))
    bench("denoising.py", "--sets", str(tmp_path / "photos"), "--sigmas", "25", "--out", str(tmp_path / "noise"))
    noisy = json.loads((tmp_path / "noise" / "records" / "photos sigma 25" / "noisy_input" / "img_1.json").read_text())
    assert 19 < noisy["psnr"] < 22  # 25/255 white noise: 20.2 dB before clipping
    report = json.loads((tmp_path / "noise" / "results.json").read_text())["sets"]
    assert report["CBSD68 (481x321) sigma 25, published"]["CBM3D (published)"]["psnr"] == 30.71
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "noise" / "records").rglob("*.json")}
    bench("denoising.py", "--sets", str(tmp_path / "photos"), "--sigmas", "25", "--out", str(tmp_path / "noise"))
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "noise" / "records").rglob("*.json")} == stamps
