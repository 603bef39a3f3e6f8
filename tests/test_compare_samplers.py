"""bench/compare_samplers.py, run as a user runs it: one table for all samplers on the same images and seeds,
one record per (sampler, image) kept by `spgd.harness` and reused on a rerun."""
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


def records(folder: Path) -> dict[str, int]:
    return {f"{p.parent.name}/{p.name}": p.stat().st_mtime_ns for p in folder.glob("*/*.json")}


def test_records_are_kept_per_sampler_and_image_and_reused_only_for_the_same_settings(tiny_prior_path, ffhq_demo,
                                                                                      tmp_path):
    out = tmp_path / "compare.md"
    args = ["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--size", "64", "--limit", "2",
            "--device", "cpu", "--samplers", "spgd,dps,deqir", "--out", str(out), *FEW, "deqir.steps=2"]
    ok(args)
    first = out.read_text()
    assert "| spgd | " in first and "| dps | " in first and "| deqir | " in first and "seeds 0..1" in first
    assert "DeqIR, same chain: parallel (Anderson) " in first
    kept = records(tmp_path / "compare" / "records" / "super_resolution")  # spgd.harness: one per (sampler, image)
    assert sorted(kept) == [f"{sampler}/{stem}.json" for sampler in (
        "deqir_steps-2", "deqir_steps-2_solver-sequential", "dps_steps-4", "spgd_steps-2_inner_steps-1")
        for stem in ("00000", "00001")]
    again = compare(args)  # same settings: every row comes from the kept records, nothing restored
    assert again.returncode == 0 and "compare_samplers: super_resolution" not in again.stderr
    assert out.read_text() == first and records(tmp_path / "compare" / "records" / "super_resolution") == kept
    ok([*args, "dps.zeta=0.2"])  # other settings: dps runs again into its own records, the others are kept
    now = records(tmp_path / "compare" / "records" / "super_resolution")
    assert {name: now[name] for name in kept} == kept and "dps_steps-4_zeta-0.2/00001.json" in now
    refused = compare([*args, "--precision", "bf16"])
    assert refused.returncode != 0 and "holds records of other settings (precision: 'fp32' there" in refused.stderr


def test_malformed_override_is_one_line_error(tiny_prior_path, ffhq_demo):
    done = compare(["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--size", "64", "--limit", "1",
                    "--set", "steps=3"])
    assert done.returncode != 0 and "SAMPLER.KEY=VALUE" in done.stderr and "Traceback" not in done.stderr


def test_a_sampler_the_operator_cannot_serve_gets_a_row_saying_why(tiny_prior_path, ffhq_demo, tmp_path):
    out = tmp_path / "compare.md"
    ok(["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--size", "64", "--limit", "1",
        "--device", "cpu", "--task", "motion_blur", "--samplers", "ddrm,dps",
        "--set", "dps.steps=2", "--out", str(out)])
    report = out.read_text()
    assert "| ddrm | n/a | n/a | n/a | - | - |" in report and "| dps | " in report
    assert "ddrm needs an operator with a singular value decomposition; motion_blur has none" in report


def test_diffir_is_a_row_of_the_same_table_with_its_own_weights(tiny_prior_path, ffhq_demo, tmp_path):
    from .test_diffir import _weights

    weights = _weights(tmp_path)
    out = tmp_path / "compare.md"
    args = ["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--size", "64", "--limit", "2",
            "--device", "cpu", "--out", str(out)]
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
    from spgd.metrics import image_scores
    from spgd.tasks import load_task

    paths = io.list_images([ffhq_demo])[:2]
    clean = torch.stack([io.load_image(p, 64, resize=True) for p in paths])
    model, parts = load_diffir(weights), []
    for i in range(2):  # a fresh operator per image, image i measured and restored with seed i, as the table's run
        op = spgd.make_operator(**load_task("super_resolution")["operator"])
        parts.append(spgd.restore(spgd.simulate(clean[i:i + 1], op, [i]), op, model, sampler="diffir", seed=[i],
                                  progress=False))
    psnr = sum(image_scores(x[0], image)["psnr"] for x, image in zip(parts, clean)) / 2  # of the 8-bit results
    assert row.split(" | ")[1] == f"{psnr:.2f}"
    done = compare([*args[:-2], "--task", "hdr", "--samplers", "diffir"])  # no DiffIR weights ship for HDR
    assert done.returncode != 0 and "no built-in DiffIR weights for task hdr" in done.stderr
