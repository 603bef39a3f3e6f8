"""Noise-level estimation: each estimator's error against the true level on training images at 5-75 of 255.

Images: the 10 natural tuning images and the first 10 others of the "291" training set (never a test set),
centre-cropped to 256x256. Each gets white Gaussian noise of sigma/255 (seed = its index), in two conditions:
- "float": as the denoising benchmarks add it (no clipping): the error is against sigma;
- "file": clipped to [0, 1] and rounded to 8 bits, as a file a person brings holds it. Clipping removes noise
  where the image is near black or white, so the error is against the level the file really holds (the std of
  noisy - clean), and the nominal sigma's error is reported beside it.
Reports the mean and worst relative error per level and estimator.

    python bench/noise_levels.py --out bench/results/noise_levels
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from spgd import io
from spgd.operators.noise_level import ESTIMATORS

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "sr"
TUNE = Path(__file__).parent / "splits" / "natural_tune.txt"
LEVELS = (5, 15, 25, 50, 75)


def images(root: Path, count: int = 20) -> list[Path]:
    """The tuning images, then the first training images by name, `count` in all."""
    tune = [line.strip() for line in TUNE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    every = io.list_images([root / "T91", root / "BSD200"])
    chosen = [p for p in every if p.name in tune or str(p.relative_to(root)) in tune]
    return (chosen + [p for p in every if p not in chosen])[:count]


def noisy(clean: torch.Tensor, sigma: float, seed: int, file: bool) -> torch.Tensor:
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y = clean.double() + sigma / 255 * noise
    return (y.clamp(0, 1) * 255).round() / 255 if file else y


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=SHARED)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    paths = images(args.root)
    clean = [io.load_image(path, 256, resize=True) for path in paths]
    report = {"images": [p.name for p in paths], "levels": {}}
    for condition in ("float", "file"):
        report["levels"][condition] = {}
        for sigma in LEVELS:
            measured = [noisy(x, sigma, k, condition == "file") for k, x in enumerate(clean)]
            held = np.array([float((y - x.double()).std()) * 255 for y, x in zip(measured, clean)])
            row = report["levels"][condition][sigma] = {"level_held": float(held.mean())}
            for name, estimate in ESTIMATORS.items():
                found = np.array([estimate(y) for y in measured])
                errors = np.abs(found - held) / held
                nominal = np.abs(found - sigma) / sigma
                row[name] = {"mean_estimate": float(found.mean()), "mean_relative_error": float(errors.mean()),
                             "worst_relative_error": float(errors.max()),
                             "mean_error_against_nominal": float(nominal.mean())}
                print(f"{condition} sigma {sigma} (held {held.mean():.2f}): {name} mean {found.mean():.2f}, error "
                      f"{errors.mean():.1%} (worst {errors.max():.1%}; against {sigma}: {nominal.mean():.1%})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
