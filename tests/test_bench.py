"""`spgd bench` and `spgd plot` on the tiny model: results, resume after a stop or a kill, bad images,
divergence, batch-size and process-count independence, traces and plots."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spgd.bench import BenchJob, run_bench
from spgd.cli import main
from spgd.plan import Request

from .conftest import write_face_like

FAST = ["--steps", "2", "--inner-steps", "1", "--set", "sigma_max=5.0"]


def bench(data, out, model, *extra) -> list[str]:
    return ["bench", "-t", "super_resolution", "-m", str(model), "--data", str(data), "--out", str(out), *FAST, *extra]


def run_ok(args, capsys) -> str:
    code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.glob("*/*"))}



def test_bench_writes_results_and_resumes(ffhq_demo, tiny_prior_path, tmp_path, capsys):
    out = tmp_path / "run"
    args = bench(ffhq_demo, out, tiny_prior_path, "--limit", "3", "--resize")
    assert "3 restored now" in run_ok(args, capsys)
    result = metrics(out)
    names = ["00000.png", "00001.png", "00002.png"]
    assert list(result["images"]) == names
    assert result["counts"] == {"images": 3, "restored": 3, "failed": 0, "skipped": 0}
    psnrs = [result["images"][n]["psnr"] for n in names]
    assert result["summary"]["psnr"] == pytest.approx(
        {"mean": np.mean(psnrs), "std": np.std(psnrs), "min": min(psnrs), "max": max(psnrs)})
    assert [result["images"][n]["seed"] for n in names] == [0, 1, 2]
    for name in ("metrics.md", "grid.png", "config.yaml", "restored/00002.png", "measurements/00002.png",
                 "records/00002.json"):
        assert (out / name).is_file(), name
    assert "| 00001.png |" in (out / "metrics.md").read_text()
    assert Image.open(out / "restored/00000.png").size == (64, 64)

    before = mtimes(out)
    assert "0 restored now" in run_ok(args, capsys)
    assert mtimes(out) == before and metrics(out)["images"] == result["images"]

    (out / "restored/00001.png").unlink()  # a record without its image is not a result
    assert "1 restored now" in run_ok(args, capsys)
    assert metrics(out)["images"] == result["images"]


def test_extending_a_stopped_run_equals_an_uninterrupted_one(ffhq_demo, tiny_prior_path, tmp_path, capsys):
    out, whole = tmp_path / "resumed", tmp_path / "whole"
    run_ok(bench(ffhq_demo, out, tiny_prior_path, "--resize", "--limit", "1"), capsys)
    first = mtimes(out)
    assert "2 restored now" in run_ok(bench(ffhq_demo, out, tiny_prior_path, "--resize", "--limit", "3"), capsys)
    assert {k: v for k, v in mtimes(out).items() if k in first} == first
    run_ok(bench(ffhq_demo, whole, tiny_prior_path, "--resize", "--limit", "3"), capsys)
    assert metrics(out)["images"] == metrics(whole)["images"]
    assert metrics(out)["summary"] == metrics(whole)["summary"]


STOPS_AFTER_ITS_FIRST_RESULT = """
import os, signal, sys
import spgd.bench as bench
flush = bench._flush
def flush_then_stop(*args, **kwargs):
    written = flush(*args, **kwargs)
    os.kill(os.getpid(), int(sys.argv[1]))
    return written
bench._flush = flush_then_stop
from spgd.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_stopped_run_keeps_its_results_and_resumes(stop, ffhq_demo, tiny_prior_path, tmp_path, capsys):
    """`spgd bench` in a process that sends itself the signal right after its first result is written (so
    where it stops does not depend on timing): the result is kept, and the same command finishes the rest."""
    out = tmp_path / "run"
    args = ["bench", "-t", "inpainting_random", "-m", str(tiny_prior_path), "--data", str(ffhq_demo), "--out", str(out),
            "--resize", "--limit", "3", "--steps", "4", "--inner-steps", "1", "--set", "sigma_max=5.0", "--threads", "1"]
    # a job started with `&` from a non-interactive shell (a CI script) inherits SIGINT ignored: give the
    # child the default disposition a terminal's Ctrl-C meets
    code = subprocess.run([sys.executable, "-c", STOPS_AFTER_ITS_FIRST_RESULT, str(int(stop)), *args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)).returncode
    assert code == (-signal.SIGKILL if stop == signal.SIGKILL else 130)
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("records/*.json")}
    assert list(finished) == ["00000.json"]
    printed = run_ok(args, capsys)
    assert "2 restored now" in printed
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("records/*.json") if p.name in finished} == finished
    assert metrics(out)["counts"] == {"images": 3, "restored": 3, "failed": 0, "skipped": 0}


def test_bad_images_are_skipped_with_reasons(tmp_path, tiny_prior_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    write_face_like(data / "a.png", seed=0)
    (data / "b.png").write_bytes(b"\x89PNG not really")
    truncated = write_face_like(data / "c.png", seed=2).read_bytes()
    (data / "c.png").write_bytes(truncated[: len(truncated) // 2])
    write_face_like(data / "d.png", size=80, seed=3)
    write_face_like(data / "e.jpg", seed=4)
    write_face_like(data / "e.png", seed=5)
    out = tmp_path / "run"
    code = main(bench(data, out, tiny_prior_path))
    err = capsys.readouterr().err
    assert code == 0
    result = metrics(out)
    assert list(result["images"]) == ["a.png", "d.png", "e.jpg"]  # 80x80 d.png restores at its own size
    assert result["images"]["e.jpg"]["seed"] == 4  # its index in the folder, skipped images included
    assert Image.open(next(out.rglob("d.png"))).size == (80, 80)
    skipped = result["skipped"]
    assert set(skipped) == {"b.png", "c.png", "e.png"}
    assert "not a readable image" in skipped["b.png"] and "not a readable image" in skipped["c.png"]
    assert "same name as e.jpg" in skipped["e.png"]
    assert result["counts"] == {"images": 6, "restored": 3, "failed": 0, "skipped": 3}
    assert "warning: skipped b.png" in err and "warning: skipped d.png" not in err
    assert "skipped: " in (out / "metrics.md").read_text()


class DivergingPrior:
    """The tiny prior, except that image `image` of each batch turns NaN from denoiser call `after` + 1 on."""

    def __init__(self, prior, image: int, after: int) -> None:
        self.prior, self.image, self.after, self.calls = prior, image, after, 0

    def __getattr__(self, name):  # the tiny prior's sizes, ladder and noise range
        return getattr(self.prior, name)

    def denoise(self, x, sigma):
        out = self.prior.denoise(x, sigma)
        self.calls += 1
        if self.calls > self.after:
            out = out.clone()
            out[self.image] = math.nan
        return out


def test_diverging_image_is_recorded_as_failed_and_the_others_go_on(tmp_path, tiny_prior):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        write_face_like(data / f"img{i}.png", seed=i)
    request = Request(task="hdr", model="diverging", settings={"steps": 3, "inner_steps": 1, "sigma_max": 5.0},
                      simulate=True)
    job = BenchJob(data=data, out=tmp_path / "run", request=request, batch_size=2,
                   cache={"diverging": DivergingPrior(tiny_prior, image=1, after=1)})
    result = run_bench(job)["metrics"]
    assert result["images"]["img1.png"]["failed"] and result["images"]["img1.png"]["failed_step"] == 1
    assert "psnr" not in result["images"]["img1.png"]
    assert not result["images"]["img0.png"]["failed"] and math.isfinite(result["images"]["img0.png"]["psnr"])
    assert result["failed"] == {"img1.png": 1}
    assert result["counts"] == {"images": 2, "restored": 1, "failed": 1, "skipped": 0}
    assert result["summary"]["psnr"]["mean"] == result["images"]["img0.png"]["psnr"]
    assert not (tmp_path / "run/restored/img1.png").exists()  # a failed image leaves no result picture
    assert (tmp_path / "run/restored/img0.png").is_file()
    assert "failed at step 1" in (tmp_path / "run/metrics.md").read_text()


def test_batch_size_changes_neither_measurements_nor_results(ffhq_demo, tiny_prior_path, tmp_path, capsys):
    runs = {}
    for batch_size in (1, 2):
        out = tmp_path / f"bs{batch_size}"
        run_ok(bench(ffhq_demo, out, tiny_prior_path, "--resize", "--limit", "2", "--batch-size", str(batch_size)),
               capsys)
        runs[batch_size] = out
    for name in ("00000", "00001"):
        # the same operator draw and noise, byte for byte
        measured = [(run / f"measurements/{name}.png").read_bytes() for run in (runs[1], runs[2])]
        assert measured[0] == measured[1]
        a, b = (np.asarray(Image.open(run / f"restored/{name}.png"), dtype=int) for run in (runs[1], runs[2]))
        assert np.abs(a - b).max() <= 1  # batched convolutions round differently in the last float bits


def test_two_processes_under_torchrun_equal_one(ffhq_demo, tiny_prior_path, tmp_path, capsys):
    pytest.importorskip("torch.distributed.run")
    single, multi = tmp_path / "single", tmp_path / "multi"
    args = ["--resize", "--limit", "4"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process has: float results depend on the thread count
    try:
        run_ok(bench(ffhq_demo, single, tiny_prior_path, *args), capsys)
    finally:
        torch.set_num_threads(threads)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "spgd", *bench(ffhq_demo, multi, tiny_prior_path, *args)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 restored now" in proc.stdout and proc.stdout.count("bench:") == 1  # rank 0 reports
    assert metrics(multi)["images"] == metrics(single)["images"]
    assert metrics(multi)["summary"] == metrics(single)["summary"]
    for path in sorted(single.glob("restored/*.png")):
        assert path.read_bytes() == (multi / "restored" / path.name).read_bytes(), path.name


def test_record_writes_traces_and_plots(ffhq_demo, tiny_prior_path, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    run_ok(bench(ffhq_demo, out, tiny_prior_path, "--resize", "--limit", "2", "--record"), capsys)
    trace = torch.load(out / "traces/00000.pt", weights_only=True)
    assert trace["x0hat"].dtype == torch.uint8 and trace["x0hat"].shape == (2, 3, 64, 64)
    assert trace["loss"].shape == (2,) and trace["angle_grad_score"].shape == (2,) and "x" not in trace
    plots = ["00000_diagnostics.png", "00001_diagnostics.png", "summary.png"]
    for name in plots:
        assert Image.open(out / "plots" / name).format == "PNG"
        (out / "plots" / name).unlink()
    assert "wrote 3 plot(s)" in run_ok(["plot", "--run", str(out)], capsys)
    assert all((out / "plots" / name).is_file() for name in plots)


def test_lpips_is_checked_up_front_and_scored_when_available(ffhq_demo, tiny_prior_path, tmp_path, capsys,
                                                            monkeypatch):
    from spgd.weights import MissingWeightsError, weights_path

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setenv("SPGD_CACHE", str(tmp_path / "empty-cache"))
        assert main(bench(ffhq_demo, out, tiny_prior_path, "--resize", "--lpips")) == 2
        assert "spgd weights fetch" in capsys.readouterr().err and not out.exists()
    try:
        weights_path("lpips_alex")
    except MissingWeightsError:
        pytest.skip("LPIPS weights are not fetched (spgd weights fetch)")
    run_ok(bench(ffhq_demo, out, tiny_prior_path, "--resize", "--limit", "2"), capsys)
    assert "0 restored now" in run_ok(bench(ffhq_demo, out, tiny_prior_path, "--resize", "--limit", "2", "--lpips"),
                                      capsys)  # LPIPS of earlier results comes from their files
    result = metrics(out)
    assert all(0 < r["lpips"] < 1 for r in result["images"].values()) and "lpips" in result["summary"]


def test_other_settings_do_not_mix_into_a_run(ffhq_demo, tiny_prior_path, tmp_path, capsys):
    out = tmp_path / "run"
    run_ok(bench(ffhq_demo, out, tiny_prior_path, "--resize", "--limit", "1"), capsys)
    assert main(bench(ffhq_demo, out, tiny_prior_path, "--resize", "--limit", "1", "--seed", "1")) == 2
    assert "seed: 0 there, 1 now" in capsys.readouterr().err
    assert main(bench(tmp_path / "nowhere", tmp_path / "o", tiny_prior_path)) == 2
    assert "not a folder" in capsys.readouterr().err
