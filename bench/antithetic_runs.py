"""How much of a sampler's run-to-run variance a mean of runs keeps: independent seeds against antithetic pairs.

For each image (4x SR with the task's operator and noise, seed k for image k, as `natural_images.py`) this
runs SPGD with the prior's recommended settings from the start noise of runs 0..K-1 (`run_seeds`) and,
for runs 0..K/2-1, from the negated start (-z: SPGD draws nothing else, so that run is the antithetic
twin `mean_of_runs` makes), keeps each run as OUT/<image>_run<k><+|->.pt (a rerun reuses them), and scores
the Y-PSNR (4-pixel border) of one run and of the means of 2 and K runs, independent and antithetic.

    python bench/antithetic_runs.py --root .data/tune4 --out bench/results/natural_tuning/antithetic --set lr=4
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import spgd
from spgd import io
from spgd.io import atomic_write_bytes
from spgd.metrics import image_scores
from spgd.priors import load_prior
from spgd.run import make_spec
from spgd.samplers.averaging import run_seeds
from spgd.seeding import make_generators, randn_per_image
from spgd.tasks import parse_key_values


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    torch.set_num_threads(1)
    prior = load_prior(args.prior)
    settings = {"tiling": "shift", **parse_key_values(args.set, "--set")}
    tiling = settings.pop("tiling")
    spec = make_spec(prior, "super_resolution", sampler="spgd", own_size=True, tiling=tiling, settings=settings)
    run_settings = {k: v for k, v in spec.settings.items() if k not in ("mean_of", "antithetic")}
    report = {}
    for k, path in enumerate(io.list_images([args.root])):
        clean = io.load_image(path)[None]
        operator = spec.make_operator()
        y = spgd.simulate(clean, operator, seed=[k])
        runs = {}
        for r in range(args.runs):
            for sign in (1, -1) if r < args.runs // 2 else (1,):
                key = f"{r}{'+' if sign > 0 else '-'}"
                cached = args.out / f"{path.stem}_run{key}.pt"
                if not cached.is_file():
                    seed = run_seeds([k], r)
                    start = run_settings["sigma_max"] * randn_per_image(clean.shape[1:], make_generators(seed, 1, "sampler"))
                    x = spgd.restore(y, operator, prior, sampler="spgd", seed=seed, x_start=sign * start, tiling=tiling,
                                     progress=False, **run_settings)
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    torch.save(x, cached)
                runs[key] = torch.load(cached)

        def score(keys: list[str]) -> float:
            mean = sum(runs[key] for key in keys) / len(keys)
            return image_scores(mean[0], clean[0], False, "y", 4)["psnr_y"]

        half = args.runs // 2
        report[path.stem] = {"one run": score(["0+"]),
                             "2 independent": score(["0+", "1+"]), "2 antithetic": score(["0+", "0-"]),
                             f"{args.runs} independent": score([f"{r}+" for r in range(args.runs)]),
                             f"{args.runs} antithetic": score([f"{r}{s}" for r in range(half) for s in "+-"])}
        print(path.stem, {name: round(value, 2) for name, value in report[path.stem].items()}, flush=True)
    means = {name: sum(r[name] for r in report.values()) / len(report) for name in next(iter(report.values()))}
    atomic_write_bytes(args.out / "results.json", json.dumps({"settings": run_settings, "images": report,
                                                              "mean": means}, indent=1).encode())
    print("mean", {name: round(value, 2) for name, value in means.items()})
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, required=True, help="folder of HR images (sides a multiple of 4)")
    p.add_argument("--prior", default="builtin:natural")
    p.add_argument("--runs", type=int, default=4, help="K, even (default: %(default)s)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="SPGD settings over the recommended ones")
    p.add_argument("--out", type=Path, required=True)
    run(p.parse_args())


if __name__ == "__main__":
    main()
