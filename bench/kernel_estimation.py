"""Kernel estimation against kernel size and noise level: how well the M-step (`BlindBlur.refit`) recovers a
camera-shake kernel from the blurry image and an estimate of the sharp one, the sharp image itself (the oracle:
what an exact E-step would give) or a blind restorer's result (what `spgd restore -t blind_deblur` writes).

Protocol: 256x256 centre crops of held-out images (`--sets`, BSD100's first `--limit`), each blurred (reflect
borders, as the task simulates) by a motion kernel of size S (the project's generator, intensity 0.5, centred; seed
image index + 1000 * S, never a training seed) plus Gaussian noise of level N ([-1, 1] units). Scores: MNC (Hu and
Yang, 1 = the true kernel up to a shift) and the relative L2 error after centring, means over the images, with
the median seconds of one M-step.

    python bench/kernel_estimation.py --sets BSD100 --limit 10 --sizes 9 15 21 31 --noises 0.01 0.02 0.05 \\
        [--diffir builtin:diffir-natural_deblur] --out bench/results/kernel_estimation
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import spgd
from spgd import io
from spgd.methods import load_model
from spgd.operators import make_operator
from spgd.operators.real_world import _padded
from spgd.operators.kernel_estimation import centre_kernel, max_normalised_correlation
from spgd.operators.motion_kernel import motion_kernel

ROOT = Path(__file__).resolve().parents[1]
SR = ROOT.parent / "shared" / "datasets" / "sr"
CROP = 256
KERNEL_SIZE = 31  # the task's window: every kernel is estimated on it


def crop(path: Path) -> torch.Tensor:
    image = io.load_image(path)
    height, width = image.shape[-2:]
    h, w = min(CROP, height), min(CROP, width)
    top, left = (height - h) // 2, (width - w) // 2
    return image[None, :, top: top + h, left: left + w] * 2 - 1


def scores(found: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    return {"mnc": max_normalised_correlation(found, truth),
            "error": float((centre_kernel(found) - truth).norm() / truth.norm())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", nargs="+", default=["BSD100"])
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--sizes", nargs="+", type=int, default=[9, 15, 21, 31])
    p.add_argument("--noises", nargs="+", type=float, default=[0.01, 0.02, 0.05])
    p.add_argument("--diffir", help="a blind DiffIR deblurring weight file: also the M-step on its result")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_model("diffir", args.diffir) if args.diffir else None
    files = [f for name in args.sets for f in io.list_images([SR / name])[:args.limit]]
    rows = []
    for size in args.sizes:
        for noise in args.noises:
            got: dict[str, list[dict[str, float]]] = {"sharp image (oracle)": [], "DiffIR's result": []}
            for k, path in enumerate(files):
                x = crop(path)
                truth = centre_kernel(_padded(motion_kernel(size, 0.5, torch.Generator().manual_seed(k + 1000 * size)),
                                              KERNEL_SIZE))
                y = make_operator("blind_deblur", kernel_size=KERNEL_SIZE, noise_sigma=noise, kernel=truth).measure(
                    x, [torch.Generator().manual_seed(k)])
                estimates = {"sharp image (oracle)": x}
                if model is not None:  # (spgd.restore also leaves this M-step in its operator)
                    blind = make_operator("blind_deblur", kernel_size=KERNEL_SIZE, noise_sigma=noise)
                    estimates["DiffIR's result"] = spgd.restore(y, blind, model, sampler="diffir", seed=[k]) * 2 - 1
                for name, estimate in estimates.items():
                    blind = make_operator("blind_deblur", kernel_size=KERNEL_SIZE, noise_sigma=noise)
                    start = time.perf_counter()
                    found = blind.refit(estimate, y)["kernel"][0]
                    got[name].append({**scores(found, truth), "seconds": time.perf_counter() - start})
            for name, values in got.items():
                if values:
                    rows.append({"size": size, "noise": noise, "from": name, "images": len(values),
                                 **{key: float(np.mean([v[key] for v in values])) for key in ("mnc", "error")},
                                 "seconds": float(np.median([v["seconds"] for v in values]))})
                    print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    io.atomic_write_bytes(args.out / "results.json", json.dumps(rows, indent=1).encode())
    lines = ["| kernel size | noise | M-step from | MNC | relative error | s / M-step |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['size']} | {r['noise']:g} | {r['from']} | {r['mnc']:.3f} | {r['error']:.3f} | {r['seconds']:.2f} |"
              for r in rows]
    io.atomic_write_bytes(args.out / "results.md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
