"""bench/compare_samplers.py, run as a user runs it: one table for all samplers on the same images and seeds,
resumable per sampler."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

FEW = ["--set", "spgd.steps=2", "spgd.inner_steps=1", "dps.steps=4"]
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def compare(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "compare_samplers.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def ok(args: list[str]) -> None:
    done = compare(args)
    assert done.returncode == 0, done.stderr[-2000:]


def test_table_rows_are_kept_per_sampler_and_reused_only_for_the_same_settings(tiny_prior_path, ffhq_demo, tmp_path):
    out = tmp_path / "compare.md"
    args = ["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--size", "64", "--limit", "2",
            "--batch-size", "1", "--device", "cpu", "--samplers", "spgd,dps", "--out", str(out)]
    ok([*args, *FEW])
    first = out.read_text()
    assert "| spgd | " in first and "| dps | " in first and "seeds 0..1" in first
    parts = tmp_path / "compare_parts"
    assert sorted(p.name for p in parts.iterdir()) == ["dps.json", "spgd.json"]
    kept = {p.name: p.stat().st_mtime_ns for p in parts.iterdir()}
    ok([*args, *FEW])  # same settings: both rows come from the kept results, untouched
    assert out.read_text() == first and {p.name: p.stat().st_mtime_ns for p in parts.iterdir()} == kept
    ok([*args, *FEW, "dps.zeta=0.2"])  # other settings: dps runs again, spgd's row is kept
    now = {p.name: p.stat().st_mtime_ns for p in parts.iterdir()}
    assert now["spgd.json"] == kept["spgd.json"] and now["dps.json"] != kept["dps.json"]


def test_malformed_override_is_one_line_error(tiny_prior_path, ffhq_demo):
    done = compare(["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--size", "64", "--limit", "1",
                    "--set", "steps=3"])
    assert done.returncode != 0 and "SAMPLER.KEY=VALUE" in done.stderr and "Traceback" not in done.stderr


def test_a_sampler_the_operator_cannot_serve_gets_a_row_saying_why(tiny_prior_path, ffhq_demo, tmp_path):
    out = tmp_path / "compare.md"
    ok(["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--size", "64", "--limit", "1",
        "--batch-size", "1", "--device", "cpu", "--task", "motion_blur", "--samplers", "ddrm,dps",
        "--set", "dps.steps=2", "--out", str(out)])
    report = out.read_text()
    assert "| ddrm | n/a | n/a | n/a | - | - |" in report and "| dps | " in report
    assert "ddrm needs an operator with a singular value decomposition; motion_blur has none" in report


def test_diffir_is_a_row_of_the_same_table_with_its_own_weights(tiny_prior_path, ffhq_demo, tmp_path):
    from .test_diffir import _weights

    weights = _weights(tmp_path)
    out = tmp_path / "compare.md"
    args = ["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--size", "64", "--limit", "2",
            "--batch-size", "1", "--device", "cpu", "--out", str(out)]
    ok([*args, "--samplers", "spgd,diffir", "--diffir", str(weights), *FEW])
    report = out.read_text()
    [row] = [line for line in report.splitlines() if line.startswith("| diffir | ")]
    assert row.split(" | ")[4] == "1"  # NFE per image: one DIRformer pass
    assert f"diffir: `{weights}` (fp32, its own weights)" in report and "- diffir weights: DiffIR " in report
    assert "| spgd | " in report
    # the diffir row equals restoring the same measurements with the weights themselves
    import spgd
    from spgd import io
    from spgd.diffir.model import load_diffir
    from spgd.metrics import psnr
    from spgd.tasks import load_task

    paths = io.list_images([ffhq_demo])[:2]
    clean = torch.stack([io.load_image(p, 64, resize=True) for p in paths])
    model, parts = load_diffir(weights), []
    for i in range(2):  # a fresh operator per batch of one, image i with seed i, as the table's run
        op = spgd.make_operator(**load_task("super_resolution")["operator"])
        parts.append(spgd.restore(spgd.simulate(clean[i:i + 1], op, [i]), op, model, sampler="diffir", seed=[i],
                                  progress=False))
    x = torch.cat(parts)
    assert row.split(" | ")[1] == f"{float(psnr(x, clean).mean()):.2f}"
    done = compare([*args[:-2], "--task", "hdr", "--samplers", "diffir"])  # no DiffIR weights ship for HDR
    assert done.returncode != 0 and "no built-in DiffIR weights for task hdr" in done.stderr
