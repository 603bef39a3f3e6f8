"""Blind deblurring: each blurred image restored without its kernel (DiffIR blind, Fast Diffusion EM with the
natural prior), beside what knowing the kernel gives (Wiener and the non-blind diffusion loop with the true
kernel: the upper bounds) and the blurred input, with the kernel each blind method implies scored against the
truth (MNC, Hu and Yang: the best normalised cross-correlation over shifts, 1 = the true kernel).

Protocol: centre crops of at most 256x256 of held-out images (Set14, BSD100's first 20 with `--limit 20`), each
blurred by the task's own random kernel (`spgd.operators.blind_blur`: camera shake, defocus disc or Gaussian, odd
sizes 5-31), drawn with image k's seed k (the training pairs draw from seeds hashed from the training step, so
no test kernel was seen), reflect-padded, plus Gaussian noise of `--noise` ([-1, 1] units); results quantised to
8 bits; RGB PSNR/SSIM (LPIPS with `--lpips`). A blind method's kernel is the M-step on its result (what
`spgd restore` writes as NAME_kernel.npy), scored as `kernel_mnc`; "Wiener (DiffIR's kernel)" deconvolves y with it.
Every (method, image) record is kept in OUT/records/ and reused on a rerun (`spgd.harness`).

    python bench/blind_deblur.py --sets Set14 BSD100 --limit 20 --diffir builtin:diffir-natural_deblur \\
        --out bench/results/blind_deblur
    python bench/blind_deblur.py --sets Set14 --limit 4 --samplers fast_em --true-kernel fast_em --out ...
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

import spgd
from spgd import harness, io
from spgd.baselines import classical_restore
from spgd.harness import Method
from spgd.methods import load_model
from spgd.operators.kernel_estimation import max_normalised_correlation
from spgd.operators import make_operator
from spgd.priors import load_prior
from spgd.run import make_spec, restore_batch
from spgd.tasks import parse_key_values

ROOT = Path(__file__).resolve().parents[1]
SR = ROOT.parent / "shared" / "datasets" / "sr"
CROP = 256


def centre_crop(path: Path) -> torch.Tensor:
    image = io.load_image(path)
    height, width = image.shape[-2:]
    h, w = min(CROP, height), min(CROP, width)
    top, left = (height - h) // 2, (width - w) // 2
    return image[:, top: top + h, left: left + w]


def kernel_score(estimate: torch.Tensor, operator: Any) -> dict[str, float]:
    return {"kernel_mnc": max_normalised_correlation(estimate, operator.kernel.reshape(-1, *estimate.shape[-2:])[0])}


def blind_operator(operator: Any) -> Any:
    """The task's operator as a person with only the blurry photo has it: no kernel."""
    return make_operator("blind_deblur", kernel_size=operator.kernel_size, noise_sigma=operator.noise_sigma)


def diffir_methods(path: str) -> dict[str, Method]:
    model = load_model("diffir", path)
    found: dict[int, torch.Tensor] = {}  # image k's kernel from DiffIR's result, for the Wiener row after it

    def diffir(y: torch.Tensor, operator: Any, clean: torch.Tensor, k: int) -> tuple[torch.Tensor, dict]:
        blind = blind_operator(operator)
        restored = spgd.restore(y, blind, model, sampler="diffir", seed=[k])
        found[k] = blind.kernel[0]  # the M-step on the result, which spgd.restore leaves in the operator
        return restored, kernel_score(found[k], operator)

    def wiener(y: torch.Tensor, operator: Any, clean: torch.Tensor, k: int) -> tuple[torch.Tensor, dict]:
        if k not in found:  # DiffIR's record was kept from an earlier run: its kernel again
            diffir(y, operator, clean, k)
        blind = blind_operator(operator)
        blind.kernel = found[k][None]
        return (classical_restore(y, blind, "wiener") + 1) / 2, kernel_score(found[k], operator)

    parameters = sum(p.numel() for p in model.network.parameters())
    return {f"DiffIR {Path(path).stem} (blind)": Method(diffir, parameters),
            f"Wiener (DiffIR {Path(path).stem}'s kernel)": Method(wiener, parameters)}


def sampler_method(prior: Any, text: str, true_kernel: bool) -> Method:
    name, _, rest = text.partition(":")
    settings = parse_key_values([item for item in rest.split(",") if item], "--samplers")
    if true_kernel:
        settings["refit_every"] = 0  # the operator as given: non-blind

    def restore(y: torch.Tensor, operator: Any, clean: torch.Tensor, k: int) -> tuple[torch.Tensor, dict]:
        physics = {"noise_sigma": operator.noise_sigma, **({"kernel": operator.kernel} if true_kernel else {})}
        spec = make_spec(prior, "blind_deblur", sampler=name, settings=settings, operator=physics, own_size=True)
        result = restore_batch(spec, [k], measured=y)
        if result.failed_steps[0] is not None:
            raise RuntimeError(f"{text} failed on image {k}: {result.failed_reasons[0]}")
        return result.restored, {} if true_kernel else kernel_score(result.refitted["kernel"][0], operator)

    return Method(restore, sum(p.numel() for p in prior.parameters()))


def methods(args: argparse.Namespace) -> dict[str, Method]:
    table = {"blurred input": Method(lambda y, op, clean, k: ((y + 1) / 2).clamp(0, 1)),
             "Wiener (true kernel)": Method(lambda y, op, clean, k: (classical_restore(y, op, "wiener") + 1) / 2)}
    for path in args.diffir:
        table.update(diffir_methods(path))
    if args.samplers or args.true_kernel:
        prior = load_prior(args.prior)
        for text in args.samplers:
            table[f"{text} (blind)"] = sampler_method(prior, text, False)
        for text in args.true_kernel:
            table[f"{text} (true kernel, non-blind)"] = sampler_method(prior, text, True)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", nargs="+", default=["Set14"], help="Set5, Set14, BSD100 (../shared/datasets/sr) or folders")
    p.add_argument("--noise", type=float, default=0.02, help="measurement noise, [-1, 1] units (default 0.02)")
    p.add_argument("--diffir", nargs="*", default=[], help="blind DiffIR weights (builtin:diffir-natural_deblur)")
    p.add_argument("--true-kernel", nargs="*", default=[], metavar="NAME[:KEY=VALUE,...]",
                   help="samplers run non-blind with the true kernel (fast_em: refit_every 0)")
    harness.add_arguments(p)
    args = p.parse_args()
    torch.set_num_threads(1)
    sets = {f"{Path(name).name} noise {args.noise:g}":
            io.list_images([SR / name if (SR / name).is_dir() else Path(name)])[:args.limit] for name in args.sets}
    operator = {"name": "blind_deblur", "kernel_size": 31, "noise_sigma": args.noise}
    report = harness.summaries(args.out, sets, methods(args), operator, harness.rgb_scores(args.lpips), args.shard, load=centre_crop)
    print(harness.write_report(args.out, report, [("PSNR", "psnr", ".2f"), ("SSIM", "ssim", ".4f"),
                                                  ("LPIPS", "lpips", ".3f"), ("kernel MNC", "kernel_mnc", ".3f"),
                                                  ("s / image", "seconds", ".3g")]))


if __name__ == "__main__":
    main()
