"""The fast path computes the same restoration: agreement with the plain fp32 path on a trained prior."""
from __future__ import annotations

import math

import torch

import spgd
from spgd.priors.fast import FastDenoiser
from spgd.samplers.spgd import spgd as spgd_sampler
from spgd.tasks import load_task

from .conftest import bench_script
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


def test_speed_bench_reference_path_is_the_published_computation(golden, tiny_prior):
    """bench/speed.py's reference path (backward through trainable weights) gives spgd's reference mode."""
    speed = bench_script("speed")
    op = spgd.make_operator("super_resolution", scale=4, noise_sigma=0.0)
    y = torch.rand(1, 3, 16, 16) * 2 - 1
    x_start = 100 * torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ref = speed.reference_path(tiny_prior, op, y, x_start, 2, 2, 7.0)
    ours = spgd_sampler(tiny_prior, op, y, x_start=x_start, steps=2, inner_steps=2, lr=7.0, mode="reference",
                        progress=False)
    assert (ref - ours).abs().max() < 1e-4
    assert not any(p.requires_grad for p in tiny_prior.parameters())


def test_sampler_speed_bench_scales_a_few_timed_steps_to_the_preset(tiny_prior, monkeypatch):
    """bench/sampler_speed.py times a few steps of a sampler with its preset settings and scales them."""
    sampler_speed = bench_script("sampler_speed")
    task = load_task("super_resolution")
    row = sampler_speed.measure(tiny_prior, task, "dps", 2, torch.device("cpu"), steps_timed=2)
    assert (row["steps"], row["steps_timed"], row["batch"]) == (1000, 2, 2)
    assert row["s_per_image"] > 0 and math.isnan(row["peak_gb"])  # no peak memory on the CPU
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H100 80GB HBM3")
    args = sampler_speed.argparse.Namespace(model=None, arch="ffhq256", precision="bf16", task="super_resolution")
    table = sampler_speed.markdown([row, {"sampler": "daps", "batch": 8, "error": "out of memory"}], args,
                                   torch.device("cuda"))
    assert table.startswith("Device: NVIDIA H100 80GB HBM3;") and "| daps | 8 | | | out of memory | |" in table
    assert f"| dps | 2 | 1000 | 2 | {row['s_per_image']:.2f} | n/a |" in table
