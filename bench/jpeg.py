"""JPEG artefact removal: the decode itself, DiffIR's blind JPEG restorer and the posterior samplers with the
natural prior, on the same files, at several qualities.

Protocol: each clean image is coded by libjpeg's encoder at IJG quality Q with 4:2:0 chroma (what Pillow writes;
spgd's `jpeg` operator is bit-exact with it) and decoded to 8 bits; every method restores that decoded file,
which is also the "decode" row. Scores of the 8-bit results: RGB PSNR, PSNR and PSNR-B of the BT.601 luma
(`spgd.metrics.psnr_b`, Yim & Bovik 2011), SSIM, LPIPS with `--lpips`. Sets: `BSD100` (480x320 as the SR pack
holds it: whole 16x16 MCUs) or `tune` (the 10 natural tuning images, where settings are chosen), `--limit` the
first N. Every (method, image) score is kept in OUT/records/ and reused on a rerun (`spgd.harness`).

    python bench/jpeg.py --sets BSD100 --limit 20 --qualities 10 20 30 40 --diffir builtin:diffir-natural_jpeg \\
        --out bench/results/jpeg_bsd100
    python bench/jpeg.py --sets tune --limit 2 --qualities 20 --samplers ddnm:steps=20,eta=1 --out runs/jpeg_tune
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

import spgd
from spgd import harness, io
from spgd.harness import Method
from spgd.methods import load_model
from spgd.metrics import image_scores, psnr_b, psnr_y
from spgd.priors import load_prior
from spgd.run import make_spec, restore_batch
from spgd.tasks import parse_key_values

ROOT = Path(__file__).resolve().parents[1]
SR = ROOT.parent / "shared" / "datasets" / "sr"


def images(name: str) -> list[Path]:
    if name == "tune":
        return io.list_images([ROOT / ".data" / "natural_tune"])
    if name == "BSD100":
        return io.list_images([SR / "BSD100"])
    return io.list_images([Path(name)])


def sampler_method(prior: Any, text: str, quality: int) -> Method:
    """A posterior sampler "name:key=value,..." on the JPEG operator of the file's quality."""
    name, _, rest = text.partition(":")
    settings = parse_key_values([item for item in rest.split(",") if item], "--samplers")
    spec = make_spec(prior, "jpeg", sampler=name, settings=settings, own_size=True, operator={"quality": quality})

    def restore(y: torch.Tensor, operator: Any, clean: torch.Tensor, k: int) -> torch.Tensor:
        result = restore_batch(spec, [k], measured=y)
        if result.failed_steps[0] is not None:
            raise RuntimeError(f"{text} failed on image {k}: {result.failed_reasons[0]}")
        return result.restored

    return Method(restore, sum(p.numel() for p in prior.parameters()))


def methods(args: argparse.Namespace, quality: int) -> dict[str, Method]:
    table = {"decode": Method(lambda y, op, clean, k: ((y + 1) / 2).clamp(0, 1))}
    for path in args.diffir:
        model = load_model("diffir", path)
        table[f"DiffIR {Path(path).stem} (blind)"] = Method(
            lambda y, op, clean, k, model=model: spgd.restore(y, op, model, sampler="diffir", seed=[k]),
            sum(p.numel() for p in model.network.parameters()))
    if args.samplers:
        prior = load_prior(args.prior)
        for text in args.samplers:
            table[text] = sampler_method(prior, text, quality)
    return table


def score(lpips: bool):
    def scores(restored: torch.Tensor, clean: torch.Tensor) -> dict[str, Any]:
        stored = torch.from_numpy(io.to_uint8(restored)).permute(2, 0, 1).float() / 255  # as a PNG holds it
        x, ref = stored[None].double(), clean[None].double()
        return {**image_scores(stored, clean, lpips), "psnr_y": float(psnr_y(x, ref)[0]),
                "psnr_b": float(psnr_b(x, ref)[0])}
    return scores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", nargs="+", default=["BSD100"], help="BSD100, tune, or folders")
    p.add_argument("--qualities", nargs="+", type=int, default=[10, 20, 30, 40], help="IJG qualities")
    p.add_argument("--diffir", nargs="*", default=[], help="DiffIR JPEG weight files (builtin:diffir-natural_jpeg)")
    harness.add_arguments(p)
    args = p.parse_args()
    torch.set_num_threads(1)
    report: dict[str, Any] = {}
    for quality in args.qualities:
        table = methods(args, quality)
        sets = {f"{Path(name).name} q{quality}": images(name)[:args.limit] for name in args.sets}
        operator = {"name": "jpeg", "quality": quality, "subsampling": "4:2:0"}
        report.update(harness.summaries(args.out, sets, table, operator, score(args.lpips), args.shard))
    print(harness.write_report(args.out, report, [("RGB PSNR", "psnr", ".2f"), ("Y PSNR", "psnr_y", ".2f"),
                                                  ("PSNR-B (Y)", "psnr_b", ".2f"), ("SSIM", "ssim", ".4f"),
                                                  ("LPIPS", "lpips", ".3f"), ("s / image", "seconds", ".3g")]))


if __name__ == "__main__":
    main()
