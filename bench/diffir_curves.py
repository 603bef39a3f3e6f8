"""Training curves of DiffIR runs: validation PSNR against CPU-hours, stage 2 after its stage 1.

Reads each run folder's curve.csv (`spgd train-diffir --val`), or a CSV file of that format: stage 1 is scored with the ground-truth IPR
(its upper bound), stage 2 as a restorer; stage 2's CPU-hours continue from its stage 1's. Writes a PNG and
prints a markdown table.

    python bench/diffir_curves.py --runs faces_sr=runs/faces_sr-s1,runs/faces_sr-s2 --out docs/diffir_curves.png
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path


def read(path: Path) -> list[tuple[int, float, float]]:
    """(step, CPU-hours, validation PSNR) rows of a run folder's curve.csv or of a CSV file."""
    with open(path if path.suffix == ".csv" else path / "curve.csv") as f:
        return [(int(r["step"]), float(r["cpu_hours"]), float(r["val_psnr"])) for r in csv.DictReader(f)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="NAME=STAGE1,STAGE2 (run folders or curve CSV files)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.runs), figsize=(5.5 * len(args.runs), 4), squeeze=False)
    for ax, spec in zip(axes[0], args.runs):
        name, folders = spec.split("=")
        s1, s2 = (read(Path(f)) for f in folders.split(","))
        offset = s1[-1][1]
        ax.plot([h for _, h, _ in s1], [v for *_, v in s1], "o-", label="stage 1 (ground-truth IPR)")
        ax.plot([offset + h for _, h, _ in s2], [v for *_, v in s2], "s-", label="stage 2 (the restorer)")
        ax.set(title=name, xlabel="CPU-hours (one core)", ylabel="validation PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend()
        print(f"\n{name}: | stage | step | CPU-hours | validation PSNR |\n|---|---|---|---|")
        for stage, rows, base in (("1", s1, 0.0), ("2", s2, offset)):
            for step, hours, value in rows[::2] + ([rows[-1]] if len(rows) % 2 == 0 else []):
                print(f"| {stage} | {step} | {base + hours:.2f} | {value:.2f} |")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
