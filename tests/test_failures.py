"""No silent failure: every bad or unusual input gets a clear non-zero outcome, and a correct run is untouched.

One test per case found by trying spgd as a new user would (a blown-up restore saved as a success,
flags that dropped each other, outputs that overwrote each other, tracebacks, unchecked API shapes),
plus the whole table of bad inputs (bench/bad_inputs.py, the source of docs/errors.md).
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import spgd
from spgd.cli import main
from spgd.priors.gaussian import GaussianPrior
from spgd.samplers import SAMPLERS, DivergenceError, Trace
from spgd.samplers.common import DivergenceGuard

from .conftest import write_face_like

FAST = ["--steps", "4", "--inner-steps", "1"]
ROOT = Path(__file__).resolve().parents[1]


def one_error_line(err: str) -> str:
    lines = [line.rsplit("\r", 1)[-1].strip() for line in err.split("\n")]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# --- 1. divergence that is not NaN ---------------------------------------------------------------

def guard(on_nan="raise", noise_sigma=0.01):
    return DivergenceGuard("X", torch.zeros(2, 3, 4, 4), noise_sigma, on_nan, 1, "try a smaller lr (now 9)", Trace())


def test_guard_fails_a_data_fit_that_blows_up_against_its_history():
    g, x = guard(), torch.zeros(2, 3, 4, 4)
    g.check(0, x, torch.tensor([50.0, 50.0]))
    g.check(1, x, torch.tensor([30.0, 1.0]))
    with pytest.raises(DivergenceError, match=r"X diverged at step 2 for image\(s\) \[1\]: the data-fit loss blew up "
                                              r"to 2e\+04, over 1e4 times its lowest value in this run; try a smaller lr"):
        g.check(2, x, torch.tensor([40.0, 2e4]))


def test_guard_ignores_a_large_ratio_on_a_tiny_loss_and_a_slow_climb():
    g, x = guard(), torch.zeros(2, 3, 4, 4)
    g.check(0, x, torch.tensor([1e-6, 100.0]))
    assert torch.equal(g.check(1, x, torch.tensor([1.0, 1e3])), x)  # residual 1/48 < 1; 10-fold only


def test_guard_fails_a_runaway_state_and_a_final_fit_far_above_the_noise():
    g = guard()
    with pytest.raises(DivergenceError, match=r"state's magnitude ran away \(RMS 2e\+04\)"):
        g.check(0, torch.full((2, 3, 4, 4), 2e4), scale=1.0)
    assert torch.equal(guard().check(0, torch.full((2, 3, 4, 4), 2e4), scale=100.0), torch.full((2, 3, 4, 4), 2e4))
    final = guard(noise_sigma=0.05)  # limit max(100, 1e4 * 0.05^2 = 25) = 100 per measurement entry
    final.check(0, torch.zeros(2, 3, 4, 4), torch.tensor([48 * 99.0, 48 * 99.0]), force=True)
    with pytest.raises(DivergenceError, match=r"final data fit \(mean squared residual 101\) is far above"):
        guard(noise_sigma=0.05).check(0, torch.zeros(2, 3, 4, 4), torch.tensor([48 * 101.0, 0.0]), force=True)


def test_marked_images_are_frozen_nan_with_the_reason_and_the_others_go_on():
    trace = Trace()
    g = DivergenceGuard("X", torch.zeros(2, 3, 4, 4), 0.01, "mark", 1, "try a smaller lr (now 9)", trace)
    x = torch.stack([torch.zeros(3, 4, 4), torch.full((3, 4, 4), 5e3)])
    out = g.check(3, x)
    assert torch.isnan(out[1]).all() and torch.equal(out[0], x[0]) and not g.all_failed
    assert trace.failed == {1: 3} and "X diverged at step 3: the state's magnitude ran away" in trace.reasons[1]


def test_blown_up_box_inpainting_exits_non_zero_naming_the_lr_and_a_working_lr_succeeds(tmp_path, tiny_prior_path,
                                                                                         capsys):
    face = write_face_like(tmp_path / "damaged.png")
    mask = np.full((64, 64), 255, np.uint8)
    mask[16:48, 16:48] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    args = ["restore", "-t", "inpainting_box", "-i", str(face), "--mask", str(tmp_path / "mask.png"),
            "-m", str(tiny_prior_path), *FAST]
    assert main([*args, "-o", str(tmp_path / "preset_lr")]) == 1  # the preset's lr 2.5 with this weak prior
    line = one_error_line(capsys.readouterr().err)
    assert "damaged.png: SPGD diverged at step" in line and "try a smaller lr (now 2.5)" in line
    assert not (tmp_path / "preset_lr" / "damaged.png").exists()
    metrics = json.loads((tmp_path / "preset_lr" / "metrics.json").read_text())
    assert metrics["failed"] == ["damaged.png"] and "diverged" in metrics["images"]["damaged.png"]["reason"]
    assert main([*args, "-o", str(tmp_path / "small_lr"), "--lr", "0.5"]) == 0
    assert (tmp_path / "small_lr" / "damaged.png").is_file()


# --- 2. flags that add up --------------------------------------------------------------------------

def test_repeated_set_and_op_flags_accumulate_and_a_key_twice_is_an_error(tmp_path, tiny_prior_path, capsys):
    face = write_face_like(tmp_path / "face.png")
    out = tmp_path / "out"
    assert main(["restore", "-t", "super_resolution", "--simulate", "-i", str(face), "-m", str(tiny_prior_path),
                 "-o", str(out), *FAST, "--set", "sigma_max=10", "--set", "beta=0.8", "lr_min_ratio=0.1",
                 "--op", "noise_sigma=0.05", "--op", "scale=2"]) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert {k: config["sampler_settings"][k] for k in ("sigma_max", "beta", "lr_min_ratio")} == \
        {"sigma_max": 10, "beta": 0.8, "lr_min_ratio": 0.1}
    assert config["operator"] == {"name": "super_resolution", "scale": 2, "noise_sigma": 0.05}
    assert main(["restore", "-t", "hdr", "-i", str(face), "-m", str(tiny_prior_path), "-o", str(tmp_path / "o2"),
                 "--set", "beta=0.8", "--set", "beta=0.7"]) == 2
    assert "--set: beta is given twice (0.8 and 0.7)" in one_error_line(capsys.readouterr().err)


# --- 3. outputs that overwrite each other ----------------------------------------------------------

def test_inputs_with_one_name_and_an_earlier_run_are_refused_before_any_work(tmp_path, tiny_prior_path, capsys):
    for folder in ("dupA", "dupB"):
        (tmp_path / folder).mkdir()
        write_face_like(tmp_path / folder / "face.png")
    out = tmp_path / "out"
    common = ["-t", "hdr", "--simulate", "-m", str(tiny_prior_path), "-o", str(out), *FAST]
    assert main(["restore", "-i", str(tmp_path / "dupA/face.png"), str(tmp_path / "dupB/face.png"), *common]) == 2
    assert "would both be written as face.png" in one_error_line(capsys.readouterr().err)
    assert not out.exists()  # refused before anything was written
    assert main(["restore", "-i", str(tmp_path / "dupA/face.png"), *common]) == 0
    first = (out / "face.png").read_bytes()
    assert main(["restore", "-i", str(tmp_path / "dupB/face.png"), *common, "--seed", "7"]) == 2
    assert "holds an earlier run" in one_error_line(capsys.readouterr().err)
    assert (out / "face.png").read_bytes() == first
    assert main(["restore", "-i", str(tmp_path / "dupB/face.png"), *common, "--seed", "7", "--overwrite"]) == 0


def test_an_interrupted_job_keeps_its_finished_images_and_the_same_command_resumes(tmp_path, tiny_prior_path,
                                                                                   capsys, monkeypatch):
    from spgd import restore_job

    folder = tmp_path / "faces"
    folder.mkdir()
    for k in range(3):
        write_face_like(folder / f"face{k}.png", seed=k)
    common = ["-t", "hdr", "--simulate", "-i", str(folder), "-m", str(tiny_prior_path), *FAST, "--mean-of", "2", "--batch-size", "1"]
    assert main(["restore", *common, "-o", str(tmp_path / "whole")]) == 0
    restore_one, calls = restore_job._restore_one_batch, []

    def interrupted(*args, **kwargs):  # Ctrl-C while the second image restores
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return restore_one(*args, **kwargs)

    monkeypatch.setattr(restore_job, "_restore_one_batch", interrupted)
    out = tmp_path / "out"
    assert main(["restore", *common, "-o", str(out)]) == 130
    assert "the same command resumes" in capsys.readouterr().err
    kept = json.loads((out / "metrics.json").read_text())["images"]
    assert list(kept) == ["face0.png"] and (out / "face0.png").is_file() and not (out / "face1.png").exists()
    monkeypatch.setattr(restore_job, "_restore_one_batch", restore_one)
    capsys.readouterr()
    assert main(["restore", *common, "-o", str(out)]) == 0
    assert "1 of 3 batch(es) were finished" in capsys.readouterr().err
    for k in range(3):  # the resumed job's files are the uninterrupted one's
        assert (out / f"face{k}.png").read_bytes() == (tmp_path / "whole" / f"face{k}.png").read_bytes()
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert json.loads((out / "metrics.json").read_text()) == whole
    assert main(["restore", *common, "--seed", "3", "-o", str(out)]) == 2  # another request is still refused
    assert "holds an earlier run of other inputs or settings" in one_error_line(capsys.readouterr().err)


def test_a_mean_of_runs_interrupted_keeps_its_finished_runs(tmp_path, tiny_prior_path, capsys, monkeypatch):
    from spgd.restore_job import KeptRuns

    face = write_face_like(tmp_path / "face.png")
    common = ["-t", "hdr", "--simulate", "-i", str(face), "-m", str(tiny_prior_path), *FAST, "--mean-of", "3",
              "--set", "antithetic=true"]
    assert main(["restore", *common, "-o", str(tmp_path / "whole")]) == 0
    put, get, found = KeptRuns.put, KeptRuns.get, []

    def put_then_stop(self, k, x):  # Ctrl-C just after the second run is kept
        put(self, k, x)
        if k == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(KeptRuns, "put", put_then_stop)
    out = tmp_path / "out"
    assert main(["restore", *common, "-o", str(out)]) == 130
    assert len(list((out / ".runs").glob("*-run*.pt"))) == 2 and not (out / "face.png").exists()

    def counted_get(self, k):
        x = get(self, k)
        found.append(x is not None)
        return x

    monkeypatch.setattr(KeptRuns, "put", put)
    monkeypatch.setattr(KeptRuns, "get", counted_get)
    assert main(["restore", *common, "-o", str(out)]) == 0
    assert found == [True, True, False]  # runs 0 and 1 from their files, run 2 restored
    assert (out / "face.png").read_bytes() == (tmp_path / "whole" / "face.png").read_bytes()
    assert not (out / ".runs").exists()  # removed once the image is written


def test_a_run_that_fails_before_restoring_leaves_no_files(tmp_path, tiny_prior_path, capsys):
    face = write_face_like(tmp_path / "face.png")
    out = tmp_path / "out"
    assert main(["restore", "-t", "motion_blur", "-i", str(face), "-m", str(tiny_prior_path), "-o", str(out)]) == 2
    assert "needs its kernel (--kernel)" in one_error_line(capsys.readouterr().err)
    assert not out.exists()


# --- 4./5. one-line errors instead of tracebacks and raw Python messages ---------------------------

def test_unwritable_output_and_missing_devices_are_one_line_errors(tmp_path, tiny_prior_path, capsys, monkeypatch):
    face = write_face_like(tmp_path / "face.png")
    common = ["restore", "-t", "hdr", "--simulate", "-i", str(face), "-m", str(tiny_prior_path), *FAST]

    def read_only(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("spgd.io.atomic_write_bytes", read_only)
    assert main([*common, "-o", str(tmp_path / "ro")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "/ro/" in line and line.endswith(": Permission denied")
    monkeypatch.undo()
    if not torch.cuda.is_available():
        assert main([*common, "-o", str(tmp_path / "c"), "--device", "cuda"]) == 2
        assert "device 'cuda': this torch build has no CUDA support" in one_error_line(capsys.readouterr().err)
        with pytest.raises(ValueError, match="device 'cuda:0'"):
            spgd.load_prior(tiny_prior_path, device="cuda:0")
    assert main([*common, "-o", str(tmp_path / "c"), "--device", "cuda:99" if torch.cuda.is_available() else "tpu"]) == 2
    one_error_line(capsys.readouterr().err)


def test_an_unreadable_checkpoint_never_suggests_unpickling_it(tmp_path, capsys):
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(1000))
    assert main(["restore", "-t", "hdr", "-i", "demo:astronaut", "-m", str(tmp_path / "random.pt")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "random.pt: not a readable torch checkpoint" in line and "weights_only" not in line


def test_operator_and_sampler_messages_name_the_flag_and_the_choices(tmp_path, tiny_prior_path, capsys):
    face = write_face_like(tmp_path / "face.png")
    common = ["restore", "-i", str(face), "-m", str(tiny_prior_path), "-o", str(tmp_path / "o")]
    assert main([*common, "-t", "nonlinear_blur", "--simulate"]) == 2
    assert "needs weights: the BKSE GOPRO_wVAE.pth weights file (--op-weights" in one_error_line(capsys.readouterr().err)
    assert main([*common, "-t", "hdr", "--sampler", "dps", "--set", "lr=1"]) == 2
    assert "dps has no setting 'lr'; its settings: steps, zeta" in one_error_line(capsys.readouterr().err)
    assert main([*common, "-t", "hdr", "--lr", "nan"]) == 2
    assert "--lr: spgd's lr must be a finite number, got nan" in one_error_line(capsys.readouterr().err)
    with pytest.raises(SystemExit, match="2"):
        main([*common, "-t", "hdr", "--sampler", "nope"])
    assert "argument --sampler: invalid choice: 'nope' (choose from 'daps'" in one_error_line(capsys.readouterr().err)


def test_every_bad_input_of_the_table_gets_one_clear_line(tmp_path, tiny_prior_path):
    """bench/bad_inputs.py, run as docs/errors.md is made: it exits non-zero naming any case that answers with
    a traceback, exit 0 or other than one error line; every row of its table exits 1 or 2."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bad_inputs.py"), "--out", str(tmp_path / "errors.md")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in (tmp_path / "errors.md").read_text().splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) >= 40 and all(row.split(" | ")[2] in ("1", "2") for row in rows)


# --- 6. the Python API checks shapes ---------------------------------------------------------------

def test_restore_checks_the_measurement_against_operator_and_prior(tiny_prior):
    op = spgd.make_operator("super_resolution", scale=4)
    with pytest.raises(ValueError, match="1-channel images; the model restores 3-channel"):
        spgd.restore(torch.zeros(1, 1, 16, 16), op, tiny_prior)
    with pytest.raises(ValueError, match="NaN or infinite"):
        spgd.restore(torch.full((1, 3, 16, 16), math.nan), op, tiny_prior)
    with pytest.raises(ValueError, match="NCHW batch"):
        spgd.restore(torch.zeros(3, 16, 16), op, tiny_prior)
    prior = GaussianPrior(8, channels=3)  # another size than the prior's is restored at its own size, on tiles
    out = spgd.restore(torch.zeros(1, 3, 16, 12), spgd.make_operator("hdr"), prior, steps=1, progress=False)
    assert out.shape == (1, 3, 16, 12)


# --- 7. the smaller points -------------------------------------------------------------------------

def test_bench_with_every_image_skipped_exits_non_zero(tmp_path, tiny_prior_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.png").write_bytes(b"not a png")
    assert main(["bench", "-t", "hdr", "-m", str(tiny_prior_path), "--data", str(data), "--out",
                 str(tmp_path / "run"), *FAST]) == 1
    assert "no image of" in one_error_line(capsys.readouterr().err)


def test_tasks_shows_the_published_settings_and_help_lists_the_samplers(capsys):
    assert main(["tasks"]) == 0
    listing = capsys.readouterr().out
    assert "super_resolution" in listing and "spgd: lr=7.0" in listing and "dps: zeta=0.5" in listing
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = capsys.readouterr().out
    assert f"({', '.join(sorted(SAMPLERS))})" in " ".join(shown.split())
