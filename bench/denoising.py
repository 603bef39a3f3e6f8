"""Colour denoising of white Gaussian noise: diffusion samplers with the natural prior (the level given, and the
level estimated from the image), DiffIR, CBM3D and NL-means, on the same noisy images, beside the published
CBSD68 rows.

Protocol (cszn/DPIR's `main_dpir_denoising.py`, reference/real-photos.md §7): noise of sigma/255 added to the
float image in [0, 1] without clipping, seeded per image (image k: seed k); each result quantised to 8 bits;
RGB PSNR and SSIM with no border, LPIPS beside them (`--lpips`). Sets: `tune` (the 10 natural tuning images,
`.data/natural_tune`, where settings are chosen) or `CBSD68` (BSD100's images whose BSDS300 ids form CBSD68, via
`BSD100_to_BSDS300.tsv`; the SR pack crops them to 480x320, one pixel less than CBSD68's). Every (method, image)
score is kept in OUT/records/ and reused on a rerun (`spgd.harness`); `--shard I/N` splits a set.

    python bench/denoising.py --sets tune --sigmas 25 --samplers ddnm_plus:steps=20 --out bench/results/denoising_tune
    python bench/denoising.py --sets CBSD68 --sigmas 15 25 50 --samplers ddnm_plus:steps=20 --out runs/cbsd68
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch

import spgd
from spgd import harness, io
from spgd.harness import Method
from spgd.methods import load_model
from spgd.priors import load_prior
from spgd.run import make_spec, restore_batch
from spgd.tasks import parse_key_values

ROOT = Path(__file__).resolve().parents[1]
SR = ROOT.parent / "shared" / "datasets" / "sr"
CBSD68 = {3096, 12084, 14037, 16077, 19021, 21077, 24077, 33039, 101085, 101087, 102061, 103070, 105025, 106024,
          108005, 108070, 108082, 109053, 119082, 123074, 126007, 130026, 134035, 143090, 145086, 147091, 148026,
          148089, 157055, 159008, 160068, 163085, 167062, 167083, 170057, 175032, 175043, 182053, 189080, 196073,
          197017, 208001, 210088, 216081, 219090, 220075, 223061, 227092, 229036, 236037, 241004, 241048, 253027,
          253055, 260058, 271035, 285079, 291000, 295087, 296007, 296059, 299086, 300091, 302008, 304034, 304074,
          306005, 351093}
PUBLISHED = {"CBM3D (published)": (33.52, 30.71, 27.38), "CDnCNN (published)": (33.90, 31.24, 27.95),
             "DRUNet (published)": (34.30, 31.69, 28.51)}  # CBSD68 RGB PSNR at 15 / 25 / 50 (DPIR README)


def images(name: str) -> list[Path]:
    if name == "tune":
        return io.list_images([ROOT / ".data" / "natural_tune"])
    if name == "CBSD68":
        with open(SR / "BSD100_to_BSDS300.tsv") as f:
            ids = {row["file"]: int(row["bsds300_test_id"]) for row in csv.DictReader(f, delimiter="\t")}
        return [p for p in io.list_images([SR / "BSD100"]) if ids.get(p.name) in CBSD68]
    return io.list_images([Path(name)])


def to01(y: torch.Tensor) -> np.ndarray:
    """A measurement (1x3xHxW, [-1, 1] units, unclipped) as the HxWx3 float image in [0, 1]-ish it is."""
    return ((y[0] + 1) / 2).permute(1, 2, 0).double().numpy()


def from01(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().clamp(0, 1)


def sampler_method(prior: Any, text: str, sigma: float, estimated: bool) -> Method:
    name, _, rest = text.partition(":")
    settings = parse_key_values([item for item in rest.split(",") if item], "--samplers")
    spec = make_spec(prior, "denoising", sampler=name, settings=settings, own_size=True,
                     operator=None if estimated else {"sigma": sigma}, measured=estimated)

    def restore(y: torch.Tensor, operator: Any, clean: torch.Tensor, k: int) -> torch.Tensor:
        result = restore_batch(spec, [k], measured=y)  # the spec's operator: the level given, or estimated from y
        if result.failed_steps[0] is not None:
            raise RuntimeError(f"{text} failed on image {k}: {result.failed_reasons[0]}")
        return result.restored

    return Method(restore, sum(p.numel() for p in prior.parameters()))


def methods(args: argparse.Namespace, sigma: float) -> dict[str, Method]:
    import bm3d
    from skimage.restoration import denoise_nl_means

    table = {"noisy input": Method(lambda y, op, clean, k: ((y + 1) / 2).clamp(0, 1)),
             "CBM3D (true level)": Method(lambda y, op, clean, k: from01(bm3d.bm3d_rgb(to01(y), sigma / 255))),
             "NL-means (true level)": Method(lambda y, op, clean, k: from01(denoise_nl_means(
                 to01(y), h=0.8 * sigma / 255, sigma=sigma / 255, patch_size=5, patch_distance=6, fast_mode=True,
                 channel_axis=-1)))}
    for path in args.diffir:
        model = load_model("diffir", path)
        for ensemble in (False, True) if args.self_ensemble else (False,):
            table[f"DiffIR {Path(path).stem}{' + self-ensemble' if ensemble else ''} (blind)"] = Method(
                lambda y, op, clean, k, model=model, ensemble=ensemble: spgd.restore(
                    y, op, model, sampler="diffir", seed=[k], self_ensemble=ensemble),
                sum(p.numel() for p in model.network.parameters()))
    if args.samplers:
        prior = load_prior(args.prior)
        for text in args.samplers:
            table[f"{text} (true level)"] = sampler_method(prior, text, sigma, False)
            table[f"{text} (estimated level)"] = sampler_method(prior, text, sigma, True)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", nargs="+", default=["tune"], help="tune, CBSD68, or folders")
    p.add_argument("--sigmas", nargs="+", type=float, default=[15, 25, 50], help="levels in 8-bit units")
    p.add_argument("--diffir", nargs="*", default=[], help="DiffIR denoising weight files (builtin:diffir-natural_denoise)")
    p.add_argument("--self-ensemble", action="store_true", help="also each DiffIR with its 8-transform self-ensemble")
    harness.add_arguments(p)
    args = p.parse_args()
    torch.set_num_threads(1)
    report: dict[str, Any] = {}
    for sigma in args.sigmas:
        table = methods(args, sigma)
        sets = {f"{Path(name).name} sigma {sigma:g}": images(name)[:args.limit] for name in args.sets}
        operator = {"name": "denoising", "sigma": sigma}
        report.update(harness.summaries(args.out, sets, table, operator, harness.rgb_scores(args.lpips), args.shard))
    for name, values in PUBLISHED.items():  # the published CBSD68 PSNRs beside the measured rows
        for sigma, value in zip((15, 25, 50), values):
            report.setdefault(f"CBSD68 (481x321) sigma {sigma}, published", {})[name] = {"psnr": value}
    print(harness.write_report(args.out, report, [("PSNR", "psnr", ".2f"), ("SSIM", "ssim", ".4f"),
                                                  ("LPIPS", "lpips", ".3f"), ("s / image", "seconds", ".3g")]))


if __name__ == "__main__":
    main()
