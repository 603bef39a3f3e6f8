"""The fast path computes the same restoration: agreement with the plain fp32 path on a trained prior."""
from __future__ import annotations

import math

import torch

import spgd
from spgd.priors.fast import FastDenoiser
from spgd.samplers.spgd import spgd as spgd_sampler

from .test_spgd import golden_operator


def psnr_pm1(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR between [-1, 1] images, in dB (peak-to-peak 2)."""
    return 10 * math.log10(4 / (a - b).pow(2).mean().item())


def test_bf16_fast_path_agrees_to_40db(golden, tiny_prior_path):
    case = golden["cases"]["down_sampling"]
    kw = dict(steps=case["annealing_steps"], inner_steps=case["spgd"]["num_steps"], lr=case["spgd"]["lr"],
              sigma_max=case["sigma_max"], sigma_min=case["sigma_min"], progress=False)
    plain = spgd.load_prior(tiny_prior_path)
    fast = FastDenoiser(spgd.load_prior(tiny_prior_path), "bf16")
    a = spgd_sampler(plain, golden_operator(case), case["y"], x_start=case["x_start"], **kw)
    b = spgd_sampler(fast, golden_operator(case), case["y"], x_start=case["x_start"], check_every=4, **kw)
    assert psnr_pm1(a, b) > 40
    assert not any(p.requires_grad for p in fast.parameters())


def test_fp32_fast_path_equals_plain_denoiser(golden, tiny_prior_path):
    case = next(iter(golden["denoiser"].values()))
    fast = FastDenoiser(spgd.load_prior(tiny_prior_path), "fp32", channels_last=True)
    with torch.no_grad():
        assert (fast.denoise(case["x"], case["sigma"]) - case["D"]).abs().max() < 1e-4


def bench(script: str, *args: str) -> list[dict]:
    """Run bench/<script> as a user does; the JSON rows it appends to its --out file."""
    import json
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out.md"
        done = subprocess.run([sys.executable, str(root / "bench" / script), *args, "--out", str(out)], cwd=root,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]


def test_speed_bench_reference_path_is_the_published_computation(tiny_prior_path):
    """bench/speed.py's reference path (backward through trainable weights) and the fast path (input gradient
    only, frozen weights) take the same SPGD step: at fp32 they agree to rounding."""
    [row] = bench("speed.py", "--model", str(tiny_prior_path), "--device", "cpu", "--batch-sizes", "1", "--steps", "2",
                  "--inner-steps", "2", "--measure-steps", "1", "--precision", "fp32")
    assert row["max_difference"] < 1e-3 and row["ref_s_per_image"] > 0 and row["fast_s_per_image"] > 0


def test_sampler_speed_bench_scales_a_few_timed_steps_to_the_preset(tiny_prior_path):
    """bench/sampler_speed.py times a few steps of a sampler with its preset settings and scales them."""
    [row] = bench("sampler_speed.py", "--model", str(tiny_prior_path), "--device", "cpu", "--samplers", "dps",
                  "--batch-sizes", "2", "--precision", "fp32")
    assert (row["sampler"], row["steps"], row["steps_timed"], row["batch"]) == ("dps", 1000, 20, 2)
    assert row["s_per_image"] > 0 and math.isnan(row["peak_gb"])  # no peak memory on a CPU
