"""DiffIR against SPGD and the classical baselines on the same validation faces, measurements and seeds.

For each face k (the first --limit of --data, name order, resized to 64x64 as `spgd bench --resize`
does) the task's measurement is simulated once with seed k; every method restores that same y:
- `diffir`: the stage-2 weights (--diffir), one CPEN_S2 pass, 4 MLP steps and one DIRformer pass;
- `diffir stage 1 (ground-truth IPR)`: the stage-1 weights (--upper) given the clean image, the upper bound;
- `diffir without IPR`: the same backbone trained with one learned IPR for all images (--no-ipr);
- `spgd`: the built-in prior with its recommended settings for the task (what `spgd restore` runs);
- the classical baselines that apply to the operator (`spgd.baselines`).
Scores: PSNR/SSIM of the 8-bit images and LPIPS (AlexNet), as `spgd bench`; seconds per image (one
thread, each method timed on the same images in this run) and network multiply-accumulates per image
(torch's FlopCounterMode on image 0, FLOPs / 2: convolutions, linears and matmuls). Every (method, image)
score is written when done to OUT/records/ and reused on a rerun, so a stopped run resumes (`spgd.harness`).

    python bench/diffir_faces.py --data VAL20/ --task super_resolution --diffir faces64_sr4.safetensors \\
        --upper runs/faces_sr-s1.safetensors --no-ipr runs/faces_sr-noipr.safetensors --out bench/results/diffir_faces
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

import spgd
from spgd import harness, io
from spgd.api import to_image_range
from spgd.baselines import baseline_methods, classical_restore
from spgd.diffir import load_diffir
from spgd.harness import Method
from spgd.io import atomic_write_bytes
from spgd.metrics import image_scores
from spgd.operators import make_operator
from spgd.run import make_spec
from spgd.tasks import load_task


def methods(args: argparse.Namespace, operator: Any) -> dict[str, Method]:
    """Every row measured here."""
    table: dict[str, Method] = {}
    if args.diffir:
        model = load_diffir(args.diffir)
        table["diffir"] = Method(lambda y, op, clean, k: spgd.restore(y, op, model, sampler="diffir", seed=[k]))
    if args.upper:
        upper = load_diffir(args.upper)
        table["diffir stage 1 (ground-truth IPR)"] = Method(
            lambda y, op, clean, k: to_image_range(upper.restore_measurement(op, y, gt=clean)))
    if args.no_ipr:
        plain = load_diffir(args.no_ipr)
        table["diffir without IPR"] = Method(lambda y, op, clean, k: to_image_range(plain.restore_measurement(op, y)))
    if args.prior:
        prior = spgd.load_prior(args.prior)
        settings = make_spec(prior, args.task, "spgd").settings
        table["spgd"] = Method(lambda y, op, clean, k: spgd.restore(y, op, prior, sampler="spgd", seed=[k],
                                                                    **{**settings, "progress": False}))
    for name in baseline_methods(operator):
        table[name] = Method(lambda y, op, clean, k, name=name: to_image_range(classical_restore(y, op, name)))
    return table


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    preset = load_task(args.task)["operator"]
    table = methods(args, make_operator(**preset))
    records = harness.run(Path(args.out), {args.task: io.list_images([args.data])[:args.limit]}, table, preset,
                          lambda restored, clean: image_scores(restored, clean, with_lpips=True),
                          load=lambda path: io.load_image(path, (64, 64), resize=True), macs=True,
                          log=lambda line: print(line, flush=True))[args.task]
    results = {name: harness.summarise(rows) for name, rows in records.items()}
    report = {"task": args.task, "data": str(args.data), "limit": args.limit, "methods": results}
    atomic_write_bytes(Path(args.out) / f"{args.task}.json", json.dumps(report, indent=1).encode())
    atomic_write_bytes(Path(args.out) / f"{args.task}.md", markdown(report).encode())
    print(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [f"| {report['task']} | images | PSNR ↑ | SSIM ↑ | LPIPS ↓ | s / image | GMACs / image |",
             "|---|---|---|---|---|---|---|"]
    for name, r in report["methods"].items():
        gmacs = "0 (no network)" if not r["gmacs"] else f"{r['gmacs']:.3g}"
        lines.append(f"| {name} | {r['images']} | {r['psnr']:.2f} ± {r['psnr_std']:.2f} | {r['ssim']:.4f} | "
                     f"{r['lpips']:.4f} | {r['seconds']:.3g} | {gmacs} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--task", default="super_resolution")
    p.add_argument("--diffir", help="stage-2 DiffIR weights")
    p.add_argument("--upper", help="stage-1 DiffIR weights (scored with the ground-truth IPR)")
    p.add_argument("--no-ipr", help="DiffIR backbone trained with a constant IPR")
    p.add_argument("--prior", default="builtin:faces64", help="prior for SPGD ('' to leave SPGD out)")
    p.add_argument("--out", type=Path, required=True)
    run(p.parse_args())


if __name__ == "__main__":
    main()
