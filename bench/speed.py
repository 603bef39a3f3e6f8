"""SPGD speed: the published way of computing against spgd's fast path, in the same run.

(a) reference path: fp32, weight gradients on (`loss.backward()` with trainable parameters, as the
    published code's checkpointed attention forces), no compile;
(b) fast path: frozen parameters, input gradient only, autocast (bf16 by default), channels_last,
    optionally torch.compile, NaN checks every `--check-every` steps.
Times a few outer steps after warm-up and scales to the full schedule (steps x inner steps), per
image, and reports how far the two paths' states are apart after one outer step from the same start
(`max_difference`: ~1e-5 at fp32, the precision's rounding otherwise). Writes a markdown table (stdout and
--out) and JSON rows.

  python bench/speed.py --arch ffhq256 --device cuda --batch-sizes 1 8 32 --compile
  python bench/speed.py --model ../shared/reference/tiny_adm64.pt --device cpu --batch-sizes 1 4
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

import spgd
from spgd.priors import VPDenoiser, build_network
from spgd.priors.fast import FastDenoiser
from spgd.samplers.spgd import spgd as spgd_sampler
from spgd.schedule import lr_schedule, sigma_schedule, step_sizes


def random_prior(arch: str, seed: int = 0) -> VPDenoiser:
    """An ADM prior with random weights; the zero-initialised output convolutions get small random weights
    so that every layer does real work (and gradients are not trivially zero)."""
    torch.manual_seed(seed)
    network = build_network(arch)
    for name, p in network.named_parameters():
        if p.dim() > 1 and p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=1e-3)
    return VPDenoiser(network)


def reference_path(prior: VPDenoiser, operator, y: torch.Tensor, x: torch.Tensor, steps: int, inner: int,
                   lr: float) -> torch.Tensor:
    """The published computation: plain SPGD steps, fp32, `backward()` through trainable weights."""
    prior.network.requires_grad_(True)
    sigmas = sigma_schedule(steps, 100.0, 0.1)
    f, lrs = step_sizes(sigmas), lr_schedule(lr, steps)
    try:
        for i in range(steps):
            sigma = float(sigmas[i])
            for _ in range(inner):
                x = x.detach().requires_grad_(True)
                x0hat = prior.denoise(x, sigma)
                loss = (operator.A(x0hat) - y).pow(2).sum()
                loss.backward()
                score = (x0hat.detach() - x.detach()) / sigma ** 2
                x = x.detach() - lrs[i] * x.grad
                prior.network.zero_grad(set_to_none=True)
            x = x + 0.5 * float(f[i]) * score
        return x.detach()
    finally:
        prior.network.requires_grad_(False)


def timed(fn, device: torch.device) -> tuple[float, float]:
    """(seconds, peak GPU memory in GB of the whole call, weights included; NaN on the CPU) of fn()."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter() - start, torch.cuda.max_memory_allocated() / 1e9
    return time.perf_counter() - start, math.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="ffhq256", help="network preset with random weights (ignored with --model)")
    ap.add_argument("--model", help="a checkpoint instead of random weights")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--steps", type=int, default=200, help="outer steps of the full run the time is scaled to")
    ap.add_argument("--inner-steps", type=int, default=5)
    ap.add_argument("--measure-steps", type=int, default=3, help="outer steps actually timed")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--compile", action="store_true", help="torch.compile the network in the fast path")
    ap.add_argument("--compile-mode", default=None, help="e.g. max-autotune-no-cudagraphs, reduce-overhead")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--out", type=Path, help="append the markdown table and JSON rows here")
    args = ap.parse_args()
    device = torch.device(args.device)
    make = (lambda: spgd.load_prior(args.model)) if args.model else (lambda: random_prior(args.arch))
    reference = make().to(device)
    fast = FastDenoiser(make().to(device), args.precision, channels_last=True, compile=args.compile,
                        compile_mode=args.compile_mode)
    size = reference.image_size
    op = spgd.make_operator("super_resolution", scale=4, noise_sigma=0.01)
    scale = args.steps / args.measure_steps
    rows = []
    for batch in args.batch_sizes:
        x = torch.rand(batch, 3, size, size, device=device)
        y = spgd.simulate(x, op, seed=0).to(device)
        x_start = 100.0 * torch.randn(batch, 3, size, size, device=device)

        def run_fast(n: int) -> torch.Tensor:
            # the cost of an outer step does not depend on its sigma: n steps are timed and scaled
            return spgd_sampler(fast, op, y, x_start=x_start, steps=n, inner_steps=args.inner_steps, lr=7.0,
                                mode="reference", progress=False, check_every=10)

        row = {"device": device_name(device), "torch": torch.__version__, "batch": batch, "size": size,
               "precision": args.precision, "compile": args.compile}
        try:
            run_fast(1)  # warm-up (and compilation)
            t_fast, mem_fast = timed(lambda: run_fast(args.measure_steps), device)
            row.update(fast_s_per_image=t_fast * scale / batch, fast_peak_gb=mem_fast)
            if not args.skip_reference:
                reference_path(reference, op, y, x_start, 1, args.inner_steps, 7.0)
                t_ref, mem_ref = timed(lambda: reference_path(reference, op, y, x_start, args.measure_steps,
                                                              args.inner_steps, 7.0), device)
                row.update(ref_s_per_image=t_ref * scale / batch, ref_peak_gb=mem_ref,
                           speedup=t_ref / t_fast)
                agreement = reference_path(reference, op, y, x_start, 1, args.inner_steps, 7.0) - run_fast(1)
                row["max_difference"] = float(agreement.abs().max())  # one outer step: the two paths agree
        except torch.cuda.OutOfMemoryError:  # the rows measured so far still count
            torch.cuda.empty_cache()
            row["error"] = "out of memory"
        rows.append(row)
        print(json.dumps(row), flush=True)
    table = _markdown(rows, args)
    print(table)
    if args.out:
        with args.out.open("a") as f:
            f.write(table + "\n" + "\n".join(json.dumps(r) for r in rows) + "\n\n")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    """A table cell: the number, or n/a when it was not measured (skipped, or memory on CPU)."""
    return "n/a" if value is None or math.isnan(value) else pattern.format(value)


def _markdown(rows: list[dict], args: argparse.Namespace) -> str:
    head = (f"SPGD {args.steps} x {args.inner_steps} steps, {rows[0]['size']}x{rows[0]['size']}, "
            f"{rows[0]['device']}, torch {rows[0]['torch']}, fast path: {args.precision}, channels_last, "
            f"compile={args.compile}\n\n"
            "| batch | reference s/img | fast s/img | speed-up | reference peak GB | fast peak GB |\n"
            "|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        cells = [_fmt(r.get("ref_s_per_image")), _fmt(r.get("fast_s_per_image")), _fmt(r.get("speedup"), "{:.2f}x"),
                 _fmt(r.get("ref_peak_gb"), "{:.2f}"), _fmt(r.get("fast_peak_gb"), "{:.2f}")]
        lines.append(f"| {r['batch']} | " + " | ".join(cells) + " |" + (f" {r['error']}" if "error" in r else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
