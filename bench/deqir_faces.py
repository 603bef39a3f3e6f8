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
per image on this machine; "calls" counts batched network calls, forward and backward (the sequential depth).
  sequential   the noise-aware chain walked step by step instead of solved in parallel (the depth reference)
Each face's scores are written at once to --out/<task>/<variant>[_settings]/<k>.json (atomically); a rerun
skips the faces already there (a record of another face is refused), so an interrupted run resumes.

    nice python bench/deqir_faces.py --data ../shared/datasets/utkface --limit 4 --tasks super_resolution
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from deqir_gradients import Counted

from spgd import io
from spgd.io import atomic_write_bytes
from spgd.metrics import image_scores
from spgd.priors import load_prior
from spgd.run import make_spec, restore_batch
from spgd.tasks import parse_key_values
from spgd.weights import MissingWeightsError, weights_path

SPLIT = Path(__file__).parent / "splits" / "utkface_val.txt"
VARIANTS = {"plain": {"noise_aware": False}, "noise-aware": {}, "init": {"init_objective": "measurement"},
            "oracle": {"init_objective": "l2"}, "sequential": {"solver": "sequential"}}
OUT = Path(__file__).parent / "results" / "deqir_faces"


def val_faces(data: Path, limit: int) -> list[Path]:
    names = [line.strip() for line in SPLIT.read_text().splitlines() if line.strip()]
    return [data / name for name in sorted(names[::5])[:limit]]


def record_dir(out: Path, task: str, variant: str, overrides: dict) -> Path:
    """Where one row's per-face records live: the variant and the settings that differ from DeqIR's defaults."""
    label = "_".join([variant, *(f"{k}={v}" for k, v in sorted(overrides.items()))])
    return out / task / label


def run(prior: Counted, task: str, variant: str, faces: list[Path], settings: dict, init: dict, out: Path) -> dict:
    extra = {**settings, **(init if variant in ("init", "oracle") else {})}
    overrides = {**extra, **VARIANTS[variant]}
    folder = record_dir(out, task, variant, extra)
    folder.mkdir(parents=True, exist_ok=True)
    spec = make_spec(prior, task, "deqir", settings=overrides)
    with_lpips = True
    try:
        weights_path("lpips_alex")
    except MissingWeightsError:
        with_lpips = False
    records = []
    for k, path in enumerate(faces):
        target = folder / f"{k:03d}.json"
        if target.exists():
            records.append(json.loads(target.read_text()))
            if records[-1]["face"] != path.name:
                raise SystemExit(f"{target} holds face {records[-1]['face']}, not {path.name}: another --data?")
            continue
        clean = io.load_image(path, (64, 64), resize=True)[None]
        if variant == "oracle":
            spec.settings["reference"] = clean * 2 - 1
        prior.forward = prior.backward = prior.calls = 0
        start = time.perf_counter()
        result = restore_batch(spec, [k], clean=clean, progress=False)
        seconds = time.perf_counter() - start
        record = {"face": path.name, **image_scores(result.restored[0], clean[0], with_lpips=with_lpips),
                  "nfe": prior.forward, "backward": prior.backward, "calls": prior.calls, "seconds": seconds}
        atomic_write_bytes(target, json.dumps(record, indent=1).encode())
        records.append(record)
        print(f"  {task} {folder.name} face {k}: {record['psnr']:.2f} dB, {seconds:.0f} s", flush=True)
    keys = [key for key in records[0] if key != "face"]
    return {**{key: float(np.mean([r[key] for r in records])) for key in keys},
            "psnr_each": [r["psnr"] for r in records]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the UTKFace folder")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--tasks", nargs="+", default=["super_resolution", "inpainting_random"])
    parser.add_argument("--variants", nargs="+", default=["plain", "noise-aware"], choices=sorted(VARIANTS))
    parser.add_argument("--set", nargs="+", default=[], help="DeqIR settings of every variant (key=value)")
    parser.add_argument("--init-set", nargs="+", default=["init_steps=10"],
                        help="settings of the init and oracle variants (key=value)")
    parser.add_argument("--out", type=Path, default=OUT, help="the folder of the per-face records")
    args = parser.parse_args()
    torch.set_num_threads(1)
    prior = Counted(load_prior("builtin:faces64"))
    faces = val_faces(args.data, args.limit)
    settings, init = parse_key_values(args.set, "--set"), parse_key_values(args.init_set, "--init-set")
    print(f"{len(faces)} faces; settings {settings}; init variants {init}")
    rows = ["| task | variant | PSNR (dB) | SSIM | LPIPS | NFE forward | backward | calls | s / image | PSNR per face |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for task in args.tasks:
        for variant in args.variants:
            r = run(prior, task, variant, faces, settings, init, args.out)
            each = " ".join(f"{p:.2f}" for p in r["psnr_each"])
            rows.append(f"| {task} | {variant} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r.get('lpips', float('nan')):.3f} | "
                        f"{r['nfe']:.0f} | {r['backward']:.0f} | {r['calls']:.0f} | {r['seconds']:.1f} | {each} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
