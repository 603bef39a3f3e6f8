"""Learning curve of a prior in training: 4x SR PSNR of SPGD on held-out faces against CPU-hours.

Each snapshot (exported weights, `spgd export`, whose metadata holds the training step) restores the
same measurements with the same seeds and settings (the task preset, the prior's recommended
settings, then --set), one run per image (`mean_of=1`) unless --set says otherwise. CPU-hours are step x --seconds-per-step / 3600 (the training rate measured
on the machine that trained it). One JSON per snapshot is kept as it finishes, so a stopped run
resumes; the table goes to OUT.md and the plot to OUT.png (needs matplotlib).

    python bench/learning_curve.py .data/snapshots/faces64_*.safetensors --data val/ --limit 8 \\
        --seconds-per-step 2.9 --set steps=50 inner_steps=5 sigma_max=10 sigma_min=0.6 lr=15 --out docs/learning_curve
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import safe_open

import spgd
from spgd import io
from spgd.metrics import psnr
from spgd.run import make_spec
from spgd.tasks import parse_key_values


def snapshot_step(path: Path) -> int:
    """The training step stored in exported weights' metadata."""
    with safe_open(str(path), "pt") as f:
        step = (f.metadata() or {}).get("step")
    if step is None:
        raise SystemExit(f"{path}: no training step in its metadata (export it with spgd export)")
    return int(step)


def score(model: Path, clean: torch.Tensor, task: str, overrides: dict) -> float:
    """Mean PSNR (dB) of SPGD with this prior on `clean`'s seeded measurements (image i: seed i)."""
    spec = make_spec(spgd.load_prior(model), task, "spgd", settings=overrides)
    op = spec.make_operator()
    seeds = list(range(clean.shape[0]))
    y = spgd.simulate(clean, op, seeds)
    x = spgd.restore(y, op, spec.model, seed=seeds, progress=False, **spec.settings)
    return float(psnr(x, clean).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("snapshots", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--task", default="super_resolution")
    parser.add_argument("--seconds-per-step", type=float, required=True)
    parser.add_argument("--set", nargs="*", default=[], help="SPGD settings, e.g. steps=50 (default mean_of=1)")
    parser.add_argument("--out", type=Path, required=True, help="OUT.md, OUT.png and OUT_parts/")
    args = parser.parse_args()
    torch.set_num_threads(1)
    # one run per image unless --set says otherwise: a file exported with recommended settings may ask for
    # the mean of several runs, and every point of a curve must use the same estimator
    overrides = {"mean_of": 1, **parse_key_values(args.set, "--set")}
    paths = io.list_images([args.data])[: args.limit]
    clean = torch.stack([io.load_image(p, args.size, resize=True) for p in paths])
    rows = []
    for model in sorted(args.snapshots, key=snapshot_step):
        step = snapshot_step(model)
        key = {"step": step, "images": [p.name for p in paths], "task": args.task, "set": overrides}
        part = args.out.with_name(args.out.name + "_parts") / f"{step}.json"
        kept = io.load_keyed_json(part, key)
        value = kept["psnr"] if kept else score(model, clean, args.task, overrides)
        if not kept:
            io.save_json({"key": key, "psnr": value}, part)
        rows.append((step, step * args.seconds_per_step / 3600, value))
        print(f"step {step}: {value:.2f} dB", flush=True)
    lines = [f"# Learning curve: SPGD {args.task}, {len(paths)} images of {args.data.name}", "",
             "| step | CPU-hours | PSNR (dB) |", "|---|---|---|",
             *[f"| {s} | {h:.2f} | {p:.2f} |" for s, h, p in rows], ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.plot([h for _, h, _ in rows], [p for *_, p in rows], "o-")
    ax.set_xlabel("CPU-hours of training (one core)")
    ax.set_ylabel(f"{args.task} PSNR (dB)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
