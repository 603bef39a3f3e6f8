"""Fit the low-rank Gaussian face prior (`spgd.priors.gaussian.LowRankGaussian`) to the training faces.

The strongest classical prior for aligned faces: mean + top principal components + isotropic rest,
with an exact posterior mean for every linear task. bench/quality.py --gaussian FILE scores it beside
the learned prior, as a check that the latter learned more than second-order statistics.

    python bench/fit_gaussian_faces.py --data .data/faces64/data_64.npy --components 256 --out .data/gaussian64.safetensors

--data is the uint8 Nx3xSxS array `spgd train` prepares from the training folder (validation and
tuning faces already excluded), or a folder of images (centre-cropped and resized to --size).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from spgd.io import list_images, load_image
from spgd.priors.gaussian import LowRankGaussian


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared .npy (uint8 Nx3xSxS) or image folder")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--components", type=int, default=256)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.data.suffix == ".npy":
        images = torch.from_numpy(np.load(args.data)).float() / 127.5 - 1
    else:
        images = torch.stack([load_image(p, args.size, resize=True) for p in list_images([args.data])]) * 2 - 1
    prior = LowRankGaussian.fit(images, args.components)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in prior.state_dict().items()}, str(args.out))
    explained = float(prior.variances.sum() / (prior.variances.sum() + prior.delta * (prior.mean.numel() - args.components)))
    print(f"{len(images)} faces (and their mirror images), {args.components} components explain "
          f"{100 * explained:.1f}% of the variance; rest {prior.delta:.2e} per dimension -> {args.out}")


if __name__ == "__main__":
    main()
