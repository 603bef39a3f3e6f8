"""bench/quality.py: SPGD against the classical baselines on the same measurements, resumably; lr sweeps."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from spgd import io
from spgd.metrics import image_scores

pytest.importorskip("skimage")
pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "quality.py"
FAST = ["--set", "steps=2", "inner_steps=1", "sigma_max=5.0"]


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scores(psnr: float) -> dict[str, float]:
    return {"psnr": psnr, "ssim": psnr / 100}


def test_compare_uses_common_images_and_the_best_classical_baseline(quality):
    spgd_records = {"a.png": {"failed": False, **scores(25.0)}, "b.png": {"failed": False, **scores(21.0)},
                    "c.png": {"failed": True, "failed_step": 3}}
    baselines = {name: {"wiener": scores(22.0), "richardson_lucy": scores(p), "measurement": scores(40.0)}
                 for name, p in (("a.png", 24.0), ("b.png", 22.0), ("c.png", 30.0))}
    result = quality.compare(spgd_records, baselines)
    assert result["images"] == 2 and result["spgd_failed"] == ["c.png"]
    assert list(result["methods"]) == ["spgd", "wiener", "richardson_lucy", "measurement"]
    assert result["methods"]["spgd"]["psnr"] == {"mean": 23.0, "std": 2.0}
    assert result["best_baseline"] == "richardson_lucy"  # 23.0 against 22.0; the measurement is no baseline
    assert result["margin_psnr"] == pytest.approx(0.0)
    assert result["spgd_better"] == 1
    assert quality.compare({"c.png": spgd_records["c.png"]}, baselines)["methods"] == {}


def test_best_lr_ignores_lrs_with_failures(quality):
    rows = [{"lr": 1.5, "images": 3, "failed": 0, "psnr": {"mean": 20.0}},
            {"lr": 2.5, "images": 3, "failed": 0, "psnr": {"mean": 21.0}},
            {"lr": 4.0, "images": 2, "failed": 1, "psnr": {"mean": 25.0}}]
    assert quality.best_lr(rows) == 2.5
    assert quality.best_lr(rows[2:]) is None


def test_quality_run_scores_the_bench_measurements_and_resumes(quality, ffhq_demo, tiny_prior_path, tmp_path,
                                                               capsys):
    out = tmp_path / "quality"
    args = ["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--resize", "--limit", "2",
            "--tasks", "super_resolution", "inpainting_random", "--device", "cpu", "--out", str(out), *FAST]
    quality.main(args)
    report = json.loads((out / "quality.json").read_text())
    result = report["results"]["ffhq-demo"]
    assert list(result["super_resolution"]["methods"]) == ["spgd", "bicubic"]
    assert list(result["inpainting_random"]["methods"]) == ["spgd", "biharmonic", "measurement"]
    assert result["inpainting_random"]["spgd_params"]["steps"] == 2
    run = out / "quality" / "ffhq-demo" / "inpainting_random"
    for name in ("00000", "00001"):
        # the baselines saw the bench's own measurement: its PNG scores exactly as the measurement does
        clean = io.load_image(ffhq_demo / f"{name}.png", 64, resize=True)
        stored = io.load_image(run / "measurements" / f"{name}.png")
        assert image_scores(stored, clean) == result["inpainting_random"]["per_image"][f"{name}.png"]["measurement"]
        assert (result["inpainting_random"]["per_image"][f"{name}.png"]["spgd"]
                == {k: json.loads((run / "records" / f"{name}.json").read_text())[k] for k in ("psnr", "ssim")})
    markdown = (out / "quality.md").read_text()
    assert "| super_resolution | bicubic | 2 |" in markdown
    assert "| ffhq-demo | inpainting_random | biharmonic |" in markdown

    cached = {p: p.stat().st_mtime_ns for p in out.glob("quality/*/*/baselines/*.json")}
    assert len(cached) == 4
    quality.main(args)
    assert {p: p.stat().st_mtime_ns for p in out.glob("quality/*/*/baselines/*.json")} == cached
    assert json.loads((out / "quality.json").read_text())["results"] == report["results"]
    capsys.readouterr()

    with pytest.raises(SystemExit, match="other settings"):
        quality.main([*args[:-4], "--set", "steps=3", "inner_steps=1", "sigma_max=5.0"])


def test_lr_sweep_tabulates_each_lr(quality, ffhq_demo, tiny_prior_path, tmp_path, capsys):
    out = tmp_path / "sweep"
    quality.main(["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--resize", "--limit", "1",
                  "--device", "cpu", "--out", str(out), "--sweep-lr", "0.5", "1.5", *FAST])
    report = json.loads((out / "sweep.json").read_text())
    rows = report["results"]["ffhq-demo"]["inpainting_box"]["rows"]
    assert [row["lr"] for row in rows] == [0.5, 1.5]
    assert (out / "sweep" / "ffhq-demo" / "inpainting_box" / "lr_1.5" / "records" / "00000.json").is_file()
    best = report["results"]["ffhq-demo"]["inpainting_box"]["best_lr"]
    assert best == max(rows, key=lambda row: row["psnr"]["mean"])["lr"]
    assert f"- ffhq-demo, inpainting_box: best lr {best:g}" in (out / "sweep.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit, match="--sweep-lr"):
        quality.main(["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--out", str(out),
                      "--sweep-lr", "1", "--set", "lr=2"])
