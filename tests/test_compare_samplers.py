"""bench/compare_samplers.py: one table for all samplers on the same images and seeds, resumable per sampler."""
from __future__ import annotations

import pytest
import torch

from .conftest import bench_script

FEW = ["--set", "spgd.steps=2", "spgd.inner_steps=1", "dps.steps=4"]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def compare():
    return bench_script("compare_samplers")


def test_table_rows_are_kept_per_sampler_and_reused_only_for_the_same_settings(compare, tiny_prior_path, ffhq_demo,
                                                                                 tmp_path, monkeypatch):
    out = tmp_path / "compare.md"
    args = ["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--size", "64", "--limit", "2",
            "--batch-size", "1", "--device", "cpu", "--samplers", "spgd,dps", "--out", str(out)]
    compare.main([*args, *FEW])
    first = out.read_text()
    assert "| spgd | " in first and "| dps | " in first and "seeds 0..1" in first
    assert sorted(p.name for p in (tmp_path / "compare_parts").iterdir()) == ["dps.json", "spgd.json"]

    def must_not_run(*_, **__):
        raise AssertionError("a kept result was recomputed")

    monkeypatch.setattr(compare, "compare_one", must_not_run)
    compare.main([*args, *FEW])  # same settings: both rows come from the kept results
    assert out.read_text() == first
    with pytest.raises(AssertionError, match="recomputed"):
        compare.main([*args, *FEW, "dps.zeta=0.2"])  # other settings: dps must run again


def test_malformed_override_is_one_line_error(compare, tiny_prior_path, ffhq_demo):
    with pytest.raises(SystemExit, match="SAMPLER.KEY=VALUE"):
        compare.main(["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--size", "64", "--limit", "1",
                      "--set", "steps=3"])


def test_a_sampler_the_operator_cannot_serve_gets_a_row_saying_why(compare, tiny_prior_path, ffhq_demo, tmp_path):
    out = tmp_path / "compare.md"
    compare.main(["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--size", "64", "--limit", "1",
                  "--batch-size", "1", "--device", "cpu", "--task", "motion_blur", "--samplers", "ddrm,dps",
                  "--set", "dps.steps=2", "--out", str(out)])
    report = out.read_text()
    assert "| ddrm | n/a | n/a | n/a | - | - |" in report and "| dps | " in report
    assert "ddrm needs an operator with a singular value decomposition; motion_blur has none" in report


def test_diffir_is_a_row_of_the_same_table_with_its_own_weights(compare, tiny_prior_path, ffhq_demo, tmp_path,
                                                                 monkeypatch):
    from spgd.diffir import model as diffir_model

    from .test_diffir import _weights

    weights = _weights(tmp_path)
    out = tmp_path / "compare.md"
    args = ["--model", str(tiny_prior_path), "--data", str(ffhq_demo), "--size", "64", "--limit", "2",
            "--batch-size", "1", "--device", "cpu", "--out", str(out)]
    compare.main([*args, "--samplers", "spgd,diffir", "--diffir", str(weights), *FEW])
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
    monkeypatch.setattr(diffir_model, "BUILTIN_DIR", tmp_path / "none")  # no built-in DiffIR weights
    with pytest.raises(SystemExit, match="compare_samplers: error: no built-in DiffIR weights for task "
                                         "super_resolution"):
        compare.main([*args[:-2], "--samplers", "diffir"])
