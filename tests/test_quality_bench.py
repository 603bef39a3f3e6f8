"""bench/quality.py, run as a user runs it (a subprocess): SPGD and the classical baselines on the same
measurements, one record per (method, image) kept by `spgd.harness` and reused on a rerun; lr sweeps."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import spgd
from spgd import io
from spgd.baselines import METHODS
from spgd.harness import record_path
from spgd.metrics import image_scores
from spgd.priors.gaussian import LowRankGaussian
from spgd.tasks import load_task

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--set", "steps=2", "inner_steps=1", "sigma_max=5.0"]
SPGD = "spgd (steps=2, inner_steps=1, sigma_max=5)"  # SPGD's row and records: named by its --set
STEMS = ("00000", "00001")
pytestmark = pytest.mark.usefixtures("one_thread")


def quality(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "quality.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def ok(*args: str) -> str:
    done = quality(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def mtimes(out: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in (out / "records").rglob("*.json")}


def test_spgd_and_the_baselines_restore_the_same_measurements_once(tiny_prior_path, ffhq_demo, tmp_path):
    faces = torch.rand(32, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    gaussian = tmp_path / "gaussian.safetensors"
    save_file({k: v.contiguous() for k, v in LowRankGaussian.fit(faces, components=4).state_dict().items()},
              str(gaussian))
    gaussian_row = f"gaussian (components=4, sha256={hashlib.sha256(gaussian.read_bytes()).hexdigest()[:16]})"
    out = tmp_path / "quality"
    args = ["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--resize", "--limit", "2",
            "--tasks", "super_resolution", "inpainting_random", "--gaussian", str(gaussian), "--device", "cpu",
            "--out", str(out), *FAST]
    ok(*args)
    report = json.loads((out / "quality.json").read_text())
    result = report["results"]["ffhq-demo"]
    rows = {"super_resolution": [SPGD, "bicubic", gaussian_row],
            "inpainting_random": [SPGD, "biharmonic", gaussian_row, "measurement"]}
    for task, methods in rows.items():
        assert list(result[task]["methods"]) == methods and result[task]["images"] == 2
        for method in methods:  # one record per (method, image), all of the same two images
            records = [json.loads(record_path(out, f"ffhq-demo/{task}", method, stem).read_text()) for stem in STEMS]
            assert [r["image"] for r in records] == ["00000.png", "00001.png"]
    assert result["inpainting_random"]["spgd_params"]["steps"] == 2
    operator = load_task("inpainting_random")["operator"]
    for k, stem in enumerate(STEMS):  # the measurement every method restored: image k measured with seed k
        clean = io.load_image(ffhq_demo / f"{stem}.png", 64, resize=True)
        y = spgd.simulate(clean[None], spgd.make_operator(**operator), seed=[k])
        record = json.loads(record_path(out, "ffhq-demo/inpainting_random", "measurement", stem).read_text())
        assert image_scores(spgd.to_image_range(y)[0], clean) == {key: record[key] for key in ("psnr", "ssim")}
    markdown = (out / "quality.md").read_text()
    assert f"| super_resolution | {SPGD} | 2 |" in markdown and "| super_resolution | bicubic | 2 |" in markdown
    assert "| ffhq-demo | inpainting_random | biharmonic |" in markdown

    kept = mtimes(out)
    assert len(kept) == 2 * 7
    log = ok(*args)  # a rerun restores nothing: every record is read back
    assert "quality: 0 (method, image) restores run now" in log and mtimes(out) == kept
    assert json.loads((out / "quality.json").read_text())["results"] == report["results"]
    refused = quality(*args, "--precision", "bf16")
    assert refused.returncode != 0 and "holds records of other settings (precision: 'fp32' there" in refused.stderr


def test_only_the_chosen_baselines_run(tiny_prior_path, ffhq_demo, tmp_path):
    out = tmp_path / "quality"
    args = ["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--resize", "--limit", "1",
            "--tasks", "super_resolution", "gaussian_blur", "--device", "cpu", "--out", str(out), *FAST]
    ok(*args, "--baselines", "wiener", "biharmonic")
    report = json.loads((out / "quality.json").read_text())
    assert report["settings"]["baselines"] == ["biharmonic", "wiener"]
    assert list(report["results"]["ffhq-demo"]["super_resolution"]["methods"]) == [SPGD]
    assert list(report["results"]["ffhq-demo"]["gaussian_blur"]["methods"]) == [SPGD, "wiener (balance=0.001)",
                                                                                  "measurement"]
    markdown = (out / "quality.md").read_text()
    assert "Classical methods run: biharmonic, wiener, each on the tasks it applies to; not run: bicubic, " \
           "richardson_lucy." in markdown
    assert "| gaussian_blur | wiener (balance=0.001) | 1 |" in markdown

    ok(*args, "--baselines", "bicubic")  # wiener's records stay on disk, out of this table
    results = json.loads((out / "quality.json").read_text())["results"]["ffhq-demo"]
    assert list(results["super_resolution"]["methods"]) == [SPGD, "bicubic"]
    assert list(results["gaussian_blur"]["methods"]) == [SPGD, "measurement"]
    assert "best_baseline" not in results["gaussian_blur"]
    done = quality(*args, "--baselines", "wiener", "lucy")
    assert done.returncode == 2 and "invalid choice: 'lucy'" in done.stderr
    assert all(method in done.stderr for method in METHODS)


def test_the_sweep_picks_the_best_lr_among_those_without_failure(tiny_prior_path, ffhq_demo, tmp_path):
    out = tmp_path / "sweep"
    args = ["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--resize", "--limit", "2", "--device", "cpu",
            "--out", str(out), "--sweep-lr", "0.5", "1.5", "1e12", *FAST]

    def sweep() -> dict:
        return json.loads((out / "sweep.json").read_text())["results"]["ffhq-demo"]["inpainting_box"]

    def record(lr: str, stem: str) -> Path:
        return record_path(out, "ffhq-demo/inpainting_box", f"{SPGD[:-1]}, lr={lr})", stem)

    ok(*args)
    rows = sweep()["rows"]
    assert [row["lr"] for row in rows] == [0.5, 1.5, 1e12]
    assert rows[2]["images"] == 0 and rows[2]["failed"] == 2  # lr 1e12 diverges on both images
    best = max(rows[:2], key=lambda row: row["psnr"])["lr"]
    assert sweep()["best_lr"] == best and f"- ffhq-demo, inpainting_box: best lr {best:g}" in (out / "sweep.md").read_text()

    other = f"{1.5 if best == 0.5 else 0.5:g}"  # made the highest-scoring lr, with one failed image
    failed = json.loads(record(other, "00000").read_text())
    record(other, "00000").write_text(json.dumps({key: failed[key] for key in ("seconds", "image", "size")}
                                                 | {"failed": True}))
    record(other, "00001").write_text(json.dumps(json.loads(record(other, "00001").read_text()) | {"psnr": 99.0}))
    assert "quality: 0 (method, image) restores run now" in ok(*args)
    rows = {row["lr"]: row for row in sweep()["rows"]}
    assert rows[float(other)]["failed"] == 1 and rows[float(other)]["psnr"] == 99.0 > rows[best]["psnr"]
    assert sweep()["best_lr"] == best

    record(f"{best:g}", "00001").write_text(json.dumps({"failed": True, "seconds": 0.0, "image": "00001.png"}))
    ok(*args)
    assert sweep()["best_lr"] is None
    assert "- ffhq-demo, inpainting_box: best lr none: no lr restored every image without failure" \
        in (out / "sweep.md").read_text()

    contradiction = quality(*args[:-4], "--sweep-lr", "1", "--set", "lr=2")
    assert contradiction.returncode != 0 and "--sweep-lr" in contradiction.stderr
    null = quality(*args[:-8], "--set", "lr=None")  # the runbook passing on a sweep's null best lr
    assert null.returncode != 0 and "lr=None: not a number" in null.stderr
