"""Wall clock and peak memory of every sampler with its published settings, on the same prior and task.

Each sampler runs a few of its steps after a warm-up; the time is scaled to the preset's full step
count (a step's cost does not depend on its noise level: one network pass, with or without an input
gradient, for SPGD's inner steps, DPS and RED-diff; 5 ODE passes and 100 Langevin steps per DAPS
level). NaN checks run every 50 steps (one host synchronisation each). DeqIR runs whole, both ways: the parallel (Anderson) solve of its T-step chain and the same
chain walked step by step, so their ratio is its parallel speed-up on this device. By default the
prior is the FFHQ-256 architecture with random weights (costs do not depend on the weights, except
DeqIR's iteration count: random weights never converge, so it runs its 15 iterations; a real prior
may stop earlier).

    python bench/sampler_speed.py --arch ffhq256 --device cuda --batch-sizes 1 8 --out bench/results/sampler_speed.md
    python bench/sampler_speed.py --model ../shared/reference/tiny_adm64.pt --device cpu --batch-sizes 1
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch
from speed import device_name, random_prior, timed

import spgd
from spgd.priors.fast import PRECISIONS, FastDenoiser
from spgd.tasks import load_task, preset_settings, setting_layers

SAMPLERS = ("spgd", "dps", "daps", "reddiff", "deqir")
STEPS_TIMED = {"spgd": 4, "dps": 20, "daps": 4, "reddiff": 20}  # DeqIR runs whole


def measure(prior: Any, task: dict, name: str, batch: int, device: torch.device,
            steps_timed: int | None) -> dict[str, Any]:
    """One sampler at one batch size: seconds per image scaled to the full run, and peak GB per image."""
    size = prior.image_size
    op = spgd.make_operator(**task["operator"]).to(device)
    y = spgd.simulate(torch.rand(batch, 3, size, size, device=device), op, seed=list(range(batch)))
    params = {k: v for layer in setting_layers(name, task).values() for k, v in layer.items()}
    full = params["steps"]
    timed_params = {**params, "steps": steps_timed or full}

    def run(settings: dict[str, Any]) -> None:
        spgd.restore(y, op, prior, sampler=name, seed=list(range(batch)), progress=False, **{**settings, "check_every": 50})

    run({**timed_params, "steps": min(2, timed_params["steps"])} if name != "deqir" else {**params, "steps": 10})
    seconds, peak_gb = timed(lambda: run(timed_params), device)
    return {"sampler": name, "batch": batch, "steps": full, "steps_timed": timed_params["steps"],
            "s_per_image": seconds * full / timed_params["steps"] / batch, "peak_gb": peak_gb}


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, device: torch.device) -> str:
    lines = [f"Device: {device_name(device)}; torch {torch.__version__}; prior: "
             f"{args.model or args.arch + ' (random weights)'}, {args.precision} autocast, channels_last, not compiled; "
             f"task {args.task} (preset settings).",
             "", "| sampler | batch | full steps | timed steps | s / image | peak GB (batch) |", "|---|---|---|---|---|---|"]
    for r in rows:
        label = r["sampler"] + (f" ({r['solver']})" if "solver" in r else "")
        if "error" in r:
            lines.append(f"| {label} | {r['batch']} | | | {r['error']} | |")
            continue
        peak = "n/a" if math.isnan(r["peak_gb"]) else f"{r['peak_gb']:.1f}"
        lines.append(f"| {label} | {r['batch']} | {r['steps']} | {r['steps_timed']} | {r['s_per_image']:.2f} | {peak} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="ffhq256", help="network preset with random weights (ignored with --model)")
    ap.add_argument("--model", help="a checkpoint instead of random weights")
    ap.add_argument("--task", default="super_resolution", help="task preset (its per-sampler settings)")
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--precision", default="bf16", choices=sorted(PRECISIONS))
    ap.add_argument("--out", type=Path, help="append the markdown table and JSON rows here")
    args = ap.parse_args()
    device = torch.device(args.device)
    prior = spgd.load_prior(args.model) if args.model else random_prior(args.arch)
    prior = FastDenoiser(prior.to(device), args.precision)
    task = load_task(args.task)
    runs = [(name, None) for name in args.samplers.split(",") if name != "deqir"]
    if "deqir" in args.samplers.split(","):
        runs += [("deqir", "anderson"), ("deqir", "sequential")]
    rows = []
    for batch in args.batch_sizes:
        for name, solver in runs:
            label = {"solver": solver} if solver else {}
            run_task = {**task, name: {**preset_settings(task, name), **label}}
            try:
                rows.append({**measure(prior, run_task, name, batch, device, STEPS_TIMED.get(name)), **label})
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                rows.append({"sampler": name, "batch": batch, "error": "out of memory", **label})
            print(json.dumps(rows[-1]), flush=True)
    table = markdown(rows, args, device)
    print(table)
    if args.out:
        with args.out.open("a") as f:
            f.write(table + "\n" + "\n".join(json.dumps(r) for r in rows) + "\n\n")


if __name__ == "__main__":
    main()
