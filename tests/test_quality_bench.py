"""bench/quality.py: SPGD against the classical baselines on the same measurements, resumably; lr sweeps."""
from __future__ import annotations

import dataclasses
import json
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import spgd
from spgd import io
from spgd.baselines import METHODS
from spgd.bench import BenchJob
from spgd.metrics import image_scores
from spgd.plan import Request

from .conftest import bench_script

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--set", "steps=2", "inner_steps=1", "sigma_max=5.0"]


@pytest.fixture(scope="module")
def quality():
    return bench_script("quality")


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


def baseline_job(data: Path, out: Path, task: str, seed: int = 0) -> BenchJob:
    """A bench run of two images whose baselines alone are computed (the prior is only asked its size)."""
    request = Request(task=task, model="sized", simulate=True, resize=True)
    return BenchJob(data=data, out=out, request=request, seed=seed, limit=2,
                    cache={"sized": SimpleNamespace(image_size=64, image_channels=3)})


def test_cached_baselines_are_used_only_for_the_settings_they_were_computed_with(quality, ffhq_demo, tmp_path):
    job = baseline_job(ffhq_demo, tmp_path, "inpainting_box")
    with ThreadPoolExecutor(2) as pool:
        wait(quality.start_baselines(job, METHODS, pool))
        first = quality.read_baselines(job, METHODS)
        assert list(first) == ["00000.png", "00001.png"] and list(first["00000.png"]) == ["biharmonic", "measurement"]
        assert quality.start_baselines(job, METHODS, pool) == []  # all cached

        reseeded = dataclasses.replace(job, seed=5)
        assert quality.read_baselines(reseeded, METHODS) == {}  # another seed: another measurement
        assert quality.read_baselines(job, ["bicubic", "wiener"]) == {}  # other methods: biharmonic not asked for
        wait(quality.start_baselines(reseeded, METHODS, pool))
    second = quality.read_baselines(reseeded, METHODS)
    assert second["00001.png"] != first["00001.png"]  # recomputed for seed 5 + 1, and overwritten
    assert json.loads((tmp_path / "baselines" / "00001.json").read_text())["key"]["seed"] == 6
    assert quality.read_baselines(job, METHODS) == {}


def test_baselines_of_every_task_start_first_and_survive_an_interruption(quality, ffhq_demo, tmp_path, monkeypatch):
    jobs = {("ffhq-demo", task): baseline_job(ffhq_demo, tmp_path / task, task)
            for task in ("super_resolution", "inpainting_random")}
    last = tmp_path / "inpainting_random" / "baselines" / "00001.json"

    def interrupted_bench(job):  # the first SPGD run: stopped once the last task's baselines are done
        deadline = time.monotonic() + 60
        while not last.is_file() and time.monotonic() < deadline:
            time.sleep(0.01)
        raise KeyboardInterrupt

    monkeypatch.setattr(quality, "run_bench", interrupted_bench)
    with pytest.raises(KeyboardInterrupt):
        quality.compare_all(jobs, METHODS, workers=1)
    assert last.is_file()  # submitted before SPGD's first run and saved without waiting for its end
    assert all(len(quality.read_baselines(job, METHODS)) == 2 for job in jobs.values())


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


def test_quality_runs_only_the_chosen_baselines(quality, ffhq_demo, tiny_prior_path, tmp_path, capsys):
    out = tmp_path / "quality"
    args = ["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--resize", "--limit", "1",
            "--tasks", "super_resolution", "gaussian_blur", "--device", "cpu", "--out", str(out), *FAST]
    quality.main([*args, "--baselines", "wiener", "biharmonic"])
    report = json.loads((out / "quality.json").read_text())
    assert report["settings"]["baselines"] == ["biharmonic", "wiener"]
    assert list(report["results"]["ffhq-demo"]["super_resolution"]["methods"]) == ["spgd"]
    assert list(report["results"]["ffhq-demo"]["gaussian_blur"]["methods"]) == ["spgd", "wiener", "measurement"]
    markdown = (out / "quality.md").read_text()
    assert "Classical methods run: biharmonic, wiener, each on the tasks it applies to; not run: bicubic, " \
           "richardson_lucy." in markdown
    assert "| gaussian_blur | wiener (balance=0.001) | 1 |" in markdown

    quality.main([*args, "--baselines", "bicubic"])  # the cached blur scores hold wiener: recomputed without
    blur = json.loads((out / "quality.json").read_text())["results"]["ffhq-demo"]["gaussian_blur"]
    assert list(blur["methods"]) == ["spgd", "measurement"] and "best_baseline" not in blur
    capsys.readouterr()
    with pytest.raises(SystemExit, match="2"):  # argparse's usage error
        quality.main([*args, "--baselines", "wiener", "lucy"])
    error = capsys.readouterr().err
    assert "invalid choice: 'lucy'" in error and all(method in error for method in METHODS)


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
    report["results"]["ffhq-demo"]["inpainting_box"].update(best_lr=None, rows=[{**row, "failed": 1} for row in rows])
    assert "- ffhq-demo, inpainting_box: best lr none: no lr restored every image without failure" \
           in quality.sweep_markdown(report)
    capsys.readouterr()
    with pytest.raises(SystemExit, match="--sweep-lr"):
        quality.main(["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--out", str(out),
                      "--sweep-lr", "1", "--set", "lr=2"])
    with pytest.raises(SystemExit, match="lr=None: not a number"):  # the runbook passing on a sweep's null best lr
        quality.main(["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--out", str(out), "--set", "lr=None"])


def test_the_gaussian_face_prior_is_one_more_method_on_linear_tasks(quality, tmp_path, monkeypatch):
    from spgd.priors.gaussian import LowRankGaussian

    images = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    prior = LowRankGaussian.fit(images, components=8)
    monkeypatch.setattr(quality, "GAUSSIAN_PRIOR", {"ab" * 32: prior})
    plan = quality.baseline_plan(baseline_job(tmp_path, tmp_path, "super_resolution"), ["bicubic"])
    assert plan == {"bicubic": {}, "gaussian": {"components": 8, "sha256": "ab" * 8}}
    assert "gaussian" not in quality.baseline_plan(baseline_job(tmp_path, tmp_path, "hdr"), ["bicubic"])
    op = spgd.make_operator("super_resolution", scale=4, noise_sigma=0.01)
    clean = images[:1] * 0.5 + 0.5
    y = spgd.simulate(clean, op, seed=0)
    scores = quality.score_baselines(y, op, clean[0], ["gaussian"])
    direct = image_scores(spgd.to_image_range(prior.posterior_mean(y, op))[0], clean[0])
    assert scores["gaussian"] == direct


def test_the_report_labels_the_gaussian_prior_by_its_components_and_file_hash(quality):
    stats = {"psnr": {"mean": 26.5, "std": 1.0}, "ssim": {"mean": 0.8, "std": 0.1}}
    report = {"settings": {"model": "m.pt", "precision": "fp32", "size": 64, "seed": 0, "overrides": {},
                           "data": {"faces": "faces/"}, "baselines": ["bicubic"]},
              "results": {"faces": {"super_resolution": {
                  "baselines": {"bicubic": {}, "gaussian": {"components": 2048, "sha256": "635f140974a0bc81"}},
                  "images": 3, "spgd_failed": [], "methods": {"spgd": stats, "bicubic": stats, "gaussian": stats}}}}}
    markdown = quality.quality_markdown(report)
    assert "| super_resolution | gaussian (components=2048, sha256=635f140974a0bc81) | 3 | 26.50 ± 1.00 |" in markdown
