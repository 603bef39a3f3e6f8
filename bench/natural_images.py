"""Natural images at their own size: SR, inpainting or deblurring of Set5/Set14/BSD100 by priors + samplers,
DiffIR and the classical baselines, in one table beside the published SR rows.

Each HR test image (../shared/datasets/sr/<set>/, already cropped to a multiple of 4) is degraded by the
task's operator (its preset, the preset's noise; seed k for image k), restored by every method from the same
measurement, and scored the field's way: PSNR and SSIM on the Y channel (BT.601) with `scale` pixels cropped
from each border for SR (none for the other tasks); RGB PSNR and LPIPS beside them.

The published SR rows were measured on LR made by MATLAB's imresize: the same antialiased bicubic weights
as spgd's operator (tests/test_operators.py), but rounded to 8 bits and without noise, and their bicubic
row upsamples with MATLAB's kernel (a = -0.5; spgd's bicubic baseline is torch's, a = -0.75). So for 4x
SR the bicubic row and DiffIR are measured both ways: on spgd's LR (the preset's noise, what the networks
were trained on) and on MATLAB's noise-free 8-bit LR (`matlab_imresize.py`, which reproduces the published
bicubic Set5 row: 28.43 dB against 28.42). Samplers run on spgd's LR only.

A sampler row is `NAME` or `NAME:KEY=VALUE,...` (its settings over the task preset's and the prior's
recommendation, as `spgd bench --set`); it runs on a fixed-size prior through overlapping tiles. Each
(method, image) score is written when done to OUT/records/ and reused on a rerun (`spgd.harness`); `--shard I/N`
splits a set between N processes on one OUT (the table of a shard shows its images only: rerun without it for
the whole).

    python bench/natural_images.py --sets Set5 Set14 BSD100 --diffir natural_sr4.safetensors --out runs/sr
    python bench/natural_images.py --sets Set5 --prior builtin:natural --samplers spgd:steps=10 ddnm --out runs/sr
    python bench/natural_images.py --task inpainting_random --sets Set14 --prior builtin:natural --samplers ddnm --out runs/inp
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

import spgd
from spgd import harness, io
from spgd.api import to_image_range
from spgd.baselines import baseline_methods, classical_restore
from spgd.diffir import load_diffir
from spgd.harness import Method
from spgd.io import atomic_write_bytes
from spgd.metrics import image_scores
from spgd.priors import load_prior
from spgd.run import make_spec, restore_batch
from spgd.tasks import load_task, parse_key_values

from matlab_imresize import imresize

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "sr"
# 4x, Y channel, border crop 4: Kim et al., VDSR (CVPR 2016) Table 3 (bicubic, SRCNN, VDSR); Dong et al.,
# FSRCNN (ECCV 2016); Lim et al., EDSR (CVPRW 2017) Table 6. Parameters from the same papers.
PUBLISHED = {"bicubic (published)": ({"Set5": (28.42, 0.8104), "Set14": (26.00, 0.7027), "BSD100": (25.96, 0.6675)}, 0),
             "SRCNN": ({"Set5": (30.48, 0.8628), "Set14": (27.49, 0.7503), "BSD100": (26.90, 0.7101)}, 57e3),
             "FSRCNN": ({"Set5": (30.72, 0.8660), "Set14": (27.61, 0.7550), "BSD100": (26.98, 0.7150)}, 12e3),
             "VDSR": ({"Set5": (31.35, 0.8838), "Set14": (28.01, 0.7674), "BSD100": (27.29, 0.7251)}, 665e3),
             "EDSR": ({"Set5": (32.46, 0.8968), "Set14": (28.80, 0.7876), "BSD100": (27.71, 0.7420)}, 43e6)}
MATLAB = "matlab"  # the measurement MATLAB's imresize makes (noise-free, 8-bit)


def matlab_lr(clean: torch.Tensor) -> torch.Tensor:
    """The LR image MATLAB's imresize(hr, 1/4, 'bicubic') gives, as uint8 then [-1, 1] (the published LR)."""
    hr = clean[0].permute(1, 2, 0).double().numpy()
    lr = np.clip(np.round(imresize(hr, 0.25) * 255), 0, 255) / 255
    return torch.from_numpy(lr).permute(2, 0, 1)[None].float() * 2 - 1


def matlab_bicubic(y: torch.Tensor) -> torch.Tensor:
    """MATLAB's imresize(lr, 4, 'bicubic') of an LR image y in [-1, 1], as [0, 1]."""
    lr = ((y[0] + 1) / 2).permute(1, 2, 0).double().numpy()
    return torch.from_numpy(np.clip(imresize(lr, 4), 0, 1)).permute(2, 0, 1)[None].float()


def sampler_method(prior: Any, task: str, text: str) -> tuple[str, Method]:
    """A table row for `NAME[:KEY=VALUE,...]`: the sampler on `prior` with the task's resolved settings
    (`tiling=shift`: random-shift tiles instead of blended ones)."""
    name, _, rest = text.partition(":")
    settings = parse_key_values([item for item in rest.split(",") if item], "--samplers")
    tiling = str(settings.pop("tiling", "blend"))
    spec = make_spec(prior, task, sampler=name, settings=settings, own_size=True, tiling=tiling)
    count = sum(p.numel() for p in prior.parameters())

    def restore(y: torch.Tensor, operator: Any, clean: torch.Tensor, k: int) -> torch.Tensor:
        result = restore_batch(spec, [k], measured=y, operator=operator)
        if result.failed_steps[0] is not None:
            raise RuntimeError(f"{text} failed on image {k}: {result.failed_reasons[0]}")
        return result.restored

    return f"{name} ({rest.replace(',', ', ')})" if rest else name, Method(restore, count)


def methods(args: argparse.Namespace, operator: Any) -> dict[str, Method]:
    """Every row measured here: the classical baselines of the operator, DiffIR files, prior + samplers."""
    sr4 = args.task == "super_resolution" and getattr(operator, "scale", None) == 4
    table: dict[str, Method] = {}
    for method in baseline_methods(operator):
        label = f"{method} (spgd's LR)" if sr4 else method
        table[label] = Method(lambda y, op, clean, k, method=method: to_image_range(classical_restore(y, op, method)))
    if sr4:
        table["bicubic (MATLAB imresize, measured here)"] = Method(lambda y, op, clean, k: matlab_bicubic(y),
                                                                   measurement=MATLAB)
    for path in args.diffir:
        model = load_diffir(path)
        count = sum(p.numel() for p in model.network.parameters())
        for matlab in ((False, True) if sr4 else (False,)):
            table[f"DiffIR {Path(path).stem}" + (f" ({'MATLAB' if matlab else 'spgd'}'s LR)" if sr4 else "")] = Method(
                lambda y, op, clean, k, model=model: spgd.restore(y, op, model, sampler="diffir", seed=[k]), count,
                MATLAB if matlab else harness.SIMULATED)
    if args.samplers:
        prior = load_prior(args.prior)
        for text in args.samplers:
            label, method = sampler_method(prior, args.task, text)
            table[label] = method
    return table


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    preset = {**load_task(args.task)["operator"], **parse_key_values(args.op, "--op")}
    operator = spgd.make_operator(**preset)
    crop = int(getattr(operator, "scale", 0) or 0) if args.task == "super_resolution" else 0
    table = methods(args, operator)
    sets = {name_set: io.list_images([args.root / name_set])[:args.limit] for name_set in args.sets}
    records = harness.run(args.out, sets, table, preset, lambda restored, clean: image_scores(
        restored, clean, args.lpips, "y", crop), measurements={MATLAB: lambda clean, k: matlab_lr(clean)},
        shard=args.shard, log=lambda line: print(line, flush=True))
    report: dict[str, Any] = {"task": args.task, "operator": preset, "crop_border": crop, "sets": {
        name_set: {name: harness.summarise(got, table[name].parameters) for name, got in rows.items() if got}
        for name_set, rows in records.items()}}  # a shard may hold none of a set's images
    atomic_write_bytes(args.out / "results.json", json.dumps(report, indent=1).encode())
    atomic_write_bytes(args.out / "results.md", markdown(report).encode())
    print(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    """One row per method: Y-PSNR / SSIM per set, RGB PSNR / LPIPS, seconds per image; published SR rows."""
    sets = list(report["sets"])
    crop = report["crop_border"]
    head = "| method | parameters | " + " | ".join(f"{s} Y-PSNR / SSIM" for s in sets) + \
        " | RGB PSNR / LPIPS (" + ", ".join(sets) + ") | s / image |"
    lines = [f"Task {report['task']} ({', '.join(f'{k}={v}' for k, v in report['operator'].items())}); Y channel, "
             f"{crop} border pixels cropped.", "", head, "|" + "---|" * (len(sets) + 4)]
    for name in next(iter(report["sets"].values())):
        rows = [report["sets"][s][name] for s in sets]
        rgb = ", ".join(f"{r['psnr']:.2f} / {r['lpips']:.3f}" if "lpips" in r else f"{r['psnr']:.2f}" for r in rows)
        params = f"{rows[0]['params'] / 1e6:.2f}M" if rows[0]["params"] else "-"
        lines.append(f"| {name} | {params} | " + " | ".join(f"{r['psnr_y']:.2f} / {r['ssim_y']:.4f}" for r in rows)
                     + f" | {rgb} | {np.median([r['seconds'] for r in rows]):.3g} |")
    if report["task"] == "super_resolution" and report["operator"].get("scale") == 4:
        for name, (values, params) in PUBLISHED.items():
            cells = " | ".join(f"{values[s][0]:.2f} / {values[s][1]:.4f}" if s in values else "-" for s in sets)
            lines.append(f"| {name} | {f'{params / 1e6:.3g}M' if params else '-'} | {cells} | (published) | - |")
    return "\n".join(lines) + "\n"


def shard(text: str) -> tuple[int, int]:
    """I/N of --shard, 0 <= I < N."""
    index, _, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 0/2, got {text!r}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"need 0 <= I < N, got {text!r}")
    return i, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=SHARED, help="folder holding the sets (default: ../shared/datasets/sr)")
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14", "BSD100"])
    p.add_argument("--limit", type=int, help="only the first N images of each set")
    p.add_argument("--task", default="super_resolution", help="task preset (default: super_resolution)")
    p.add_argument("--op", nargs="*", default=[], metavar="KEY=VALUE", help="operator parameters over the preset's")
    p.add_argument("--diffir", nargs="*", default=[], help="DiffIR weight files to score")
    p.add_argument("--prior", default="builtin:natural", help="the samplers' prior (default: %(default)s)")
    p.add_argument("--samplers", nargs="*", default=[], metavar="NAME[:KEY=VALUE,...]", help="sampler rows")
    p.add_argument("--lpips", action="store_true")
    p.add_argument("--shard", type=shard, default=(0, 1), metavar="I/N",
                   help="only images k with k mod N = I (k keeps its seed): N processes share a set's records")
    p.add_argument("--out", type=Path, required=True)
    run(p.parse_args())


if __name__ == "__main__":
    main()
