"""bench/compare_samplers.py: one table for all samplers on the same images and seeds, resumable per sampler."""
from __future__ import annotations

import pytest

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
