"""Natural-image 4x super-resolution on Set5, Set14 and BSD100: DiffIR and bicubic beside the published rows.

Each HR test image (../shared/datasets/sr/<set>/, already cropped to a multiple of 4) is degraded by the
super_resolution task's operator (spgd's antialiased bicubic, the preset's noise; seed k for image k),
restored, and scored the field's way: PSNR and SSIM on the Y channel (BT.601) with 4 pixels cropped from
each border; RGB PSNR and LPIPS beside them. The published rows were measured on LR made by MATLAB's
imresize: the same antialiased bicubic weights as spgd's operator (tests/test_operators.py), but rounded
to 8 bits and without noise, and their bicubic row upsamples with MATLAB's kernel (a = -0.5; spgd's
bicubic baseline is torch's, a = -0.75). So the bicubic row and DiffIR are measured here both ways: on
spgd's LR (the preset's noise, what the networks were trained on) and on MATLAB's noise-free 8-bit LR
(`matlab_imresize.py`, which reproduces the published bicubic Set5 row: 28.43 dB against 28.42).
Each (method, image) score is written when done to OUT/records/ and reused on a rerun.

    python bench/diffir_sr.py --sets Set5 Set14 BSD100 --diffir natural_sr4.safetensors --out bench/results/diffir_sr
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import spgd
from spgd import io
from spgd.api import to_image_range
from spgd.baselines import classical_restore
from spgd.diffir import load_diffir
from spgd.io import atomic_write_bytes
from spgd.metrics import lpips, psnr, psnr_y, ssim_y
from spgd.operators import make_operator
from spgd.tasks import load_task

from matlab_imresize import imresize

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "sr"
# 4x, Y channel, border crop 4: Kim et al., VDSR (CVPR 2016) Table 3 (bicubic, SRCNN, VDSR); Dong et al.,
# FSRCNN (ECCV 2016); Lim et al., EDSR (CVPRW 2017) Table 6. Parameters from the same papers.
PUBLISHED = {"bicubic (published)": ({"Set5": (28.42, 0.8104), "Set14": (26.00, 0.7027), "BSD100": (25.96, 0.6675)}, 0),
             "SRCNN": ({"Set5": (30.48, 0.8628), "Set14": (27.49, 0.7503), "BSD100": (26.90, 0.7101)}, 57e3),
             "FSRCNN": ({"Set5": (30.72, 0.8660), "Set14": (27.61, 0.7550), "BSD100": (26.98, 0.7150)}, 12e3),
             "VDSR": ({"Set5": (31.35, 0.8838), "Set14": (28.01, 0.7674), "BSD100": (27.29, 0.7251)}, 665e3),
             "EDSR": ({"Set5": (32.46, 0.8968), "Set14": (28.80, 0.7876), "BSD100": (27.71, 0.7420)}, 43e6)}


def matlab_lr(clean: torch.Tensor) -> torch.Tensor:
    """The LR image MATLAB's imresize(hr, 1/4, 'bicubic') gives, as uint8 then [-1, 1] (the published LR)."""
    hr = clean[0].permute(1, 2, 0).double().numpy()
    lr = np.clip(np.round(imresize(hr, 0.25) * 255), 0, 255) / 255
    return torch.from_numpy(lr).permute(2, 0, 1)[None].float() * 2 - 1


def matlab_bicubic(y: torch.Tensor) -> torch.Tensor:
    """MATLAB's imresize(lr, 4, 'bicubic') of an LR image y in [-1, 1], as [0, 1]."""
    lr = ((y[0] + 1) / 2).permute(1, 2, 0).double().numpy()
    return torch.from_numpy(np.clip(imresize(lr, 4), 0, 1)).permute(2, 0, 1)[None].float()


def methods(args: argparse.Namespace) -> dict[str, tuple[Callable, float, bool]]:
    """name -> (restore(y, operator, seed) -> [0, 1] images, network parameters, whether y is MATLAB's LR)."""
    table: dict[str, tuple[Callable, float, bool]] = {
        "bicubic (spgd's LR)": (lambda y, op, k: to_image_range(classical_restore(y, op, "bicubic")), 0, False),
        "bicubic (MATLAB imresize, measured here)": (lambda y, op, k: matlab_bicubic(y), 0, True)}
    for path in args.diffir:
        model = load_diffir(path)
        count = sum(p.numel() for p in model.network.parameters())
        for matlab in (False, True):
            table[f"DiffIR {Path(path).stem} ({'MATLAB' if matlab else 'spgd'}'s LR)"] = (
                lambda y, op, k, model=model: spgd.restore(y, op, model, sampler="diffir", seed=[k]), count, matlab)
    return table


def score(restored: torch.Tensor, clean: torch.Tensor, with_lpips: bool) -> dict[str, float]:
    stored = torch.from_numpy(io.to_uint8(restored[0])).permute(2, 0, 1).float()[None] / 255
    out = {"psnr_y": float(psnr_y(stored, clean, crop_border=4)[0]), "ssim_y": float(ssim_y(stored, clean, crop_border=4)[0]),
           "psnr": float(psnr(stored, clean)[0])}
    if with_lpips:
        out["lpips"] = float(lpips(stored, clean)[0])
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    preset = load_task("super_resolution")["operator"]
    table = methods(args)
    out = Path(args.out)
    report: dict[str, Any] = {"sets": {}, "operator": preset}
    for name_set in args.sets:
        files = io.list_images([args.root / name_set])
        report["sets"][name_set] = {}
        for name, (restore, params, matlab) in table.items():
            rows = []
            for k, path in enumerate(files):
                record = out / "records" / name_set / name.replace(" ", "_").replace("(", "").replace(")", "").replace("'", "") / f"{path.stem}.json"
                if record.is_file():
                    rows.append(json.loads(record.read_text()))
                    continue
                clean = io.load_image(path)[None]
                operator = make_operator(**preset)
                y = matlab_lr(clean) if matlab else spgd.simulate(clean, operator, seed=[k])
                start = time.perf_counter()
                restored = restore(y, operator, k)
                row = {**score(restored, clean, args.lpips), "seconds": time.perf_counter() - start,
                       "image": path.name, "size": list(clean.shape[-2:])}
                atomic_write_bytes(record, json.dumps(row).encode())
                rows.append(row)
            report["sets"][name_set][name] = {
                "images": len(rows), "params": params, "seconds": float(np.median([r["seconds"] for r in rows])),
                **{key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key not in ("image", "seconds", "size")}}
            print(name_set, name, report["sets"][name_set][name], flush=True)
    atomic_write_bytes(out / "sr.json", json.dumps(report, indent=1).encode())
    atomic_write_bytes(out / "sr.md", markdown(report).encode())
    print(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    sets = list(report["sets"])
    head = "| method | parameters | " + " | ".join(f"{s} Y-PSNR / SSIM" for s in sets) + \
        " | RGB PSNR / LPIPS (" + ", ".join(sets) + ") | s / image |"
    lines = [head, "|" + "---|" * (len(sets) + 4)]
    measured = list(next(iter(report["sets"].values())))
    for name in measured:
        rows = [report["sets"][s][name] for s in sets]
        rgb = ", ".join(f"{r['psnr']:.2f} / {r['lpips']:.3f}" if "lpips" in r else f"{r['psnr']:.2f}" for r in rows)
        params = f"{rows[0]['params'] / 1e6:.2f}M" if rows[0]["params"] else "-"
        lines.append(f"| {name} | {params} | " + " | ".join(f"{r['psnr_y']:.2f} / {r['ssim_y']:.4f}" for r in rows)
                     + f" | {rgb} | {np.median([r['seconds'] for r in rows]):.3g} |")
    for name, (values, params) in PUBLISHED.items():
        cells = " | ".join(f"{values[s][0]:.2f} / {values[s][1]:.4f}" if s in values else "-" for s in sets)
        lines.append(f"| {name} | {f'{params / 1e6:.3g}M' if params else '-'} | {cells} | (published) | - |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=SHARED)
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14", "BSD100"])
    p.add_argument("--diffir", nargs="*", default=[], help="DiffIR weight files to score")
    p.add_argument("--lpips", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    run(p.parse_args())


if __name__ == "__main__":
    main()
