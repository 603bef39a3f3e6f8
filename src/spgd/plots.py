"""Diagnostic plots of a recorded bench run (`spgd bench --record`, or `spgd plot --run DIR` later).

Per step of each image: the PSNR of the denoised estimate x0hat against the clean image (when the
clean image can still be read), the data-fit loss ||A(x0hat) - y||^2 on a log scale, and the two
angles of the SPGD paper's Figure 1: likelihood gradient vs prior score, and likelihood gradient vs
the previous one. One figure per image (plots/<image>_diagnostics.png) and plots/summary.png with
every image thin and their mean bold. matplotlib is imported only here (extra `plots`).
"""
from __future__ import annotations

import io as bytes_io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from . import io
from .bench import SETTINGS_FILE, TRACES, read_record

PANELS = ("x0hat PSNR (dB)", "data-fit loss", "angle (degrees)")
ANGLES = {"angle_grad_score": "likelihood gradient vs prior score",
          "angle_grad_grad": "likelihood gradient vs previous"}


def plot_run(run: Path) -> list[Path]:
    """Write the diagnostic plots of every recorded image of run folder `run`; returns their paths."""
    traces = sorted((run / TRACES).glob("*.pt"))
    if not traces:
        raise ValueError(f"{run}: no recorded traces in {run / TRACES}; run `spgd bench ... --record` first")
    settings_file = run / SETTINGS_FILE
    settings = yaml.safe_load(settings_file.read_text()) if settings_file.is_file() else {}
    plt = _pyplot()
    curves, written = {}, []
    for path in traces:
        trace = torch.load(path, map_location="cpu", weights_only=True)
        curves[path.stem] = image_curves(trace, _clean_image(run, path.stem, settings, trace))
        title = path.stem
        if trace["failed_step"] is not None:
            title += f" (diverged at step {trace['failed_step']})"
        written.append(_figure(plt, [curves[path.stem]], title, run / "plots" / f"{path.stem}_diagnostics.png"))
    title = f"{len(curves)} images: each thin, mean bold"
    written.append(_figure(plt, list(curves.values()), title, run / "plots" / "summary.png"))
    return written


def image_curves(trace: dict[str, Any], clean: torch.Tensor | None) -> dict[str, np.ndarray | None]:
    """Per-step curves of one image's trace; x0hat PSNR only when the clean 3xHxW image is given."""
    from .metrics import psnr

    curves: dict[str, np.ndarray | None] = {"x0hat_psnr": None}
    if clean is not None and "x0hat" in trace:
        x0hat = trace["x0hat"].float() / 255
        curves["x0hat_psnr"] = psnr(x0hat, clean.expand_as(x0hat)).numpy()
    for name in ("loss", *ANGLES):
        curves[name] = trace[name].double().numpy() if name in trace else None
    return curves


def _clean_image(run: Path, stem: str, settings: dict[str, Any], trace: dict[str, Any]) -> torch.Tensor | None:
    record = read_record(run, stem)
    if record is None or "data" not in settings or "x0hat" not in trace:
        return None
    try:
        return io.load_image(Path(settings["data"]) / record["name"], tuple(trace["x0hat"].shape[-2:]),
                             bool(settings.get("resize")))
    except io.ImageError:
        return None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(plt: Any, runs: list[dict[str, np.ndarray | None]], title: str, path: Path) -> Path:
    """Three panels; with several runs each is drawn thin and their mean bold."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    many = len(runs) > 1
    _panel(axes[0], runs, "x0hat_psnr", "C2", None, many)
    _panel(axes[1], runs, "loss", "C3", None, many)
    axes[1].set_yscale("log")
    for (name, label), colour in zip(ANGLES.items(), ("C0", "C1")):
        _panel(axes[2], runs, name, colour, label, many)
    axes[2].axhline(90, color="grey", linewidth=0.8, linestyle=":")
    axes[2].legend(fontsize=8)
    if all(run["x0hat_psnr"] is None for run in runs):
        axes[0].text(0.5, 0.5, "clean image not available", ha="center", va="center", transform=axes[0].transAxes)
    for ax, label in zip(axes, PANELS):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    buffer = bytes_io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    io.atomic_write_bytes(path, buffer.getvalue())
    return path


def _panel(ax: Any, runs: list[dict[str, np.ndarray | None]], name: str, colour: str, label: str | None,
           many: bool) -> None:
    """One curve per run against its step (a curve shorter than the run ends at the last step)."""
    curves = [run[name] for run in runs if run[name] is not None]
    if not curves:
        return
    steps = max(len(run["loss"]) for run in runs if run["loss"] is not None)
    for curve in curves:
        ax.plot(np.arange(steps - len(curve), steps), curve, color=colour, linewidth=0.6 if many else 1.5,
                alpha=0.35 if many else 1.0, label=None if many else label)
    if many and len({len(c) for c in curves}) == 1:
        with warnings.catch_warnings():  # steps where every image diverged are all NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(np.stack(curves), axis=0)
        ax.plot(np.arange(steps - len(mean), steps), mean, color=colour, linewidth=2, label=label)
