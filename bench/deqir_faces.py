"""DeqIR on validation faces with the built-in prior: the noise handling and the initialisation optimisation.

The faces: the first --limit (name order) of val100, every 5th face of the validation split
(`bench/splits/utkface_val.txt`) in UTKFace, as in bench/quality.py; face k is degraded with seed k
(the task preset's operator and noise) and restored with seed k. Variants (--variants):
  plain        the released chain (noise_aware=false)
  noise-aware  DDNM+'s per-singular-value step (the default)
  init         + initialisation optimisation, measurement-only objective (--init-set settings)
  oracle       + initialisation toward the ground truth (l2), the released target: a reference only
PSNR/SSIM of the 8-bit images (as `spgd bench`), LPIPS (AlexNet) where its weights are cached, network
evaluations per image (images through the denoiser, forward; backward passes counted apart) and seconds
per image on this machine.

    nice python bench/deqir_faces.py --data ../shared/datasets/utkface --limit 4 --tasks super_resolution
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from deqir_gradients import Counted

from spgd import io
from spgd.metrics import image_scores
from spgd.priors import load_prior
from spgd.run import make_spec, restore_batch
from spgd.tasks import parse_key_values
from spgd.weights import MissingWeightsError, weights_path

SPLIT = Path(__file__).parent / "splits" / "utkface_val.txt"
VARIANTS = {"plain": {"noise_aware": False}, "noise-aware": {}, "init": {"init_objective": "measurement"},
            "oracle": {"init_objective": "l2"}}


def val_faces(data: Path, limit: int) -> list[Path]:
    names = [line.strip() for line in SPLIT.read_text().splitlines() if line.strip()]
    return [data / name for name in sorted(names[::5])[:limit]]


def run(prior: Counted, task: str, variant: str, faces: list[Path], settings: dict, init: dict) -> dict:
    overrides = {**settings, **VARIANTS[variant], **(init if variant in ("init", "oracle") else {})}
    spec = make_spec(prior, task, "deqir", settings=overrides)
    with_lpips = True
    try:
        weights_path("lpips_alex")
    except MissingWeightsError:
        with_lpips = False
    scores, seconds, forward, backward = [], 0.0, 0, 0
    for k, path in enumerate(faces):
        clean = io.load_image(path, (64, 64), resize=True)[None]
        if variant == "oracle":
            spec.settings["reference"] = clean * 2 - 1
        prior.forward = prior.backward = 0
        start = time.perf_counter()
        result = restore_batch(spec, [k], clean=clean, progress=False)
        seconds += time.perf_counter() - start
        forward, backward = forward + prior.forward, backward + prior.backward
        scores.append(image_scores(result.restored[0], clean[0], with_lpips=with_lpips))
    n = len(faces)
    mean = {key: float(np.mean([s[key] for s in scores])) for key in scores[0]}
    return {**mean, "psnr_each": [s["psnr"] for s in scores], "nfe": forward / n, "backward": backward / n,
            "seconds": seconds / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the UTKFace folder")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--tasks", nargs="+", default=["super_resolution", "inpainting_random"])
    parser.add_argument("--variants", nargs="+", default=["plain", "noise-aware"], choices=sorted(VARIANTS))
    parser.add_argument("--set", nargs="+", default=[], help="DeqIR settings of every variant (key=value)")
    parser.add_argument("--init-set", nargs="+", default=["init_steps=10"],
                        help="settings of the init and oracle variants (key=value)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    prior = Counted(load_prior("builtin:faces64"))
    faces = val_faces(args.data, args.limit)
    settings, init = parse_key_values(args.set, "--set"), parse_key_values(args.init_set, "--init-set")
    print(f"{len(faces)} faces; settings {settings}; init variants {init}")
    print("| task | variant | PSNR (dB) | SSIM | LPIPS | NFE forward | backward | s / image | PSNR per face |")
    print("|---|---|---|---|---|---|---|---|---|")
    for task in args.tasks:
        for variant in args.variants:
            r = run(prior, task, variant, faces, settings, init)
            each = " ".join(f"{p:.2f}" for p in r["psnr_each"])
            print(f"| {task} | {variant} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r.get('lpips', float('nan')):.3f} | "
                  f"{r['nfe']:.0f} | {r['backward']:.0f} | {r['seconds']:.1f} | {each} |", flush=True)


if __name__ == "__main__":
    main()
