"""Inpainting with and without keeping the measured pixels: PSNR on the known pixels, on the holes and overall.

For each face of --data (name order, the first --limit, centre-cropped and resized to the prior's size)
and each inpainting task, image k is degraded with seed k and restored once with SPGD (the task preset,
the prior's recommended settings, then --set; default `mean_of=1`). "kept" is that result with the
measured pixels put back (`spgd.api.keep_measured_pixels`, exactly what `restore(keep_measured=True)`,
the command line's default, returns for the same run); "sampler" is the result as the sampler made it.
Scores are of the 8-bit images, as `spgd restore` saves them. Prints a Markdown table (and --out JSON).

    python bench/kept_pixels.py --data ../shared/datasets/ffhq-demo --limit 4 --set steps=10 mean_of=1
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

import spgd
from spgd import io
from spgd.api import keep_measured_pixels, to_image_range, to_model_range
from spgd.run import make_spec
from spgd.tasks import parse_key_values

TASKS = ("inpainting_random", "inpainting_box")


def masked_psnr(x: Tensor, clean: Tensor, where: Tensor) -> float:
    """PSNR (dB) of x against clean over the entries where `where` is true (all images together)."""
    mse = (x.double() - clean.double())[where].square().mean()
    return float(10 * torch.log10(1 / mse))


def eight_bit(x: Tensor) -> Tensor:
    """[0, 1] images as saved to PNG and read back."""
    return (x.clamp(0, 1) * 255).round() / 255


def scores(task: str, prior, clean: Tensor, overrides: dict) -> dict[str, dict[str, float]]:
    """{"sampler": ..., "kept": ...} -> {"known": dB, "holes": dB, "overall": dB} over the batch `clean`."""
    spec = make_spec(prior, task, "spgd", settings=overrides)
    op = spec.make_operator()
    seeds = list(range(len(clean)))
    y = spgd.simulate(clean, op, seeds)
    sampler = spgd.restore(y, op, prior, sampler="spgd", seed=seeds, progress=False, **spec.settings)
    kept = to_image_range(keep_measured_pixels(to_model_range(sampler), y, op))
    known = op.mask.expand_as(clean) > 0.5
    out = {}
    for name, x in (("sampler", sampler), ("kept", kept)):
        x = eight_bit(x)
        out[name] = {"known": masked_psnr(x, clean, known), "holes": masked_psnr(x, clean, ~known),
                     "overall": masked_psnr(x, clean, torch.ones_like(known))}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of clean face images")
    parser.add_argument("--model", default="builtin:faces64")
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--set", nargs="+", default=["mean_of=1"], metavar="KEY=VALUE",
                        help="sampler settings over the preset's and the prior's (default: mean_of=1)")
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    prior = spgd.load_prior(args.model)
    size = prior.image_size
    paths = io.list_images([args.data])[: args.limit]
    clean = torch.stack([io.load_image(p, size, resize=True) for p in paths])
    overrides = parse_key_values(args.set)
    results = {task: scores(task, prior, clean, overrides) for task in args.tasks}
    lines = [f"{len(paths)} faces of {args.data} at {size}x{size}, {args.model}, SPGD with --set "
             f"{' '.join(args.set)}; PSNR (dB) of the 8-bit results", "",
             "| task | result | known pixels | holes | overall |", "|---|---|---|---|---|"]
    for task, by_kind in results.items():
        for kind, s in by_kind.items():
            lines.append(f"| {task} | {kind} | {s['known']:.2f} | {s['holes']:.2f} | {s['overall']:.2f} |")
    print("\n".join(lines))
    if args.out:
        io.save_json({"data": str(args.data), "model": args.model, "images": [p.name for p in paths],
                      "set": args.set, "results": results}, args.out)
    return results


if __name__ == "__main__":
    main()
