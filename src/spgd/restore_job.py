"""`spgd restore`: restore image files with a prior and a task preset, writing files a person looks at.

Two input modes. `simulate`: each input is a clean image, degraded here with the seeded operator,
restored, and scored against the original. Otherwise each input is a measurement (a low-resolution
image for super-resolution, an image plus a mask for inpainting, a blurry image plus a kernel).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor
from tqdm.auto import tqdm

from . import io
from .api import restore, simulate, to_image_range, to_model_range
from .metrics import image_scores
from .operators import Operator, load_mask, make_operator
from .tasks import sampler_settings

# tasks whose measurement is an image a user can bring (non-linear blur is not: its kernel code is unknown)
IMAGE_MEASUREMENTS = ("super_resolution", "inpainting", "gaussian_blur", "motion_blur", "blur", "hdr")


@dataclass
class RestoreJob:
    """Everything one `spgd restore` run needs, resolved from the command line."""

    inputs: list[Path]
    output: Path
    prior: Any
    task: dict[str, Any]
    sampler: str = "spgd"
    sampler_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    batch_size: int = 1
    simulate: bool = False
    resize: bool = False
    mask: Path | None = None
    kernel: Path | None = None
    device: str = "cpu"
    model_name: str = ""


def load_kernel(path: Path) -> Tensor:
    """A blur kernel from .npy, .pt or an image file, normalised to sum 1."""
    try:
        if path.suffix == ".npy":
            kernel = torch.from_numpy(np.load(path)).float()
        elif path.suffix in (".pt", ".pth"):
            kernel = torch.as_tensor(torch.load(path, map_location="cpu", weights_only=True)).float()
        else:
            kernel = io.load_image(path).mean(dim=0)
    except io.ImageError:
        raise
    except Exception as exc:
        raise ValueError(f"{path}: cannot read the kernel ({exc})") from None
    kernel = kernel.squeeze()
    if kernel.dim() != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ValueError(f"{path}: a blur kernel must be a square 2-D array of odd size, got {tuple(kernel.shape)}")
    if not torch.isfinite(kernel).all() or kernel.min() < 0 or kernel.sum() <= 0:
        raise ValueError(f"{path}: kernel values must be finite, non-negative and not all zero")
    return kernel / kernel.sum()


def _operator_params(job: RestoreJob) -> dict[str, Any]:
    params = dict(job.task["operator"])
    if job.mask is not None:
        if params["name"] != "inpainting":
            raise ValueError(f"--mask is for inpainting, not {params['name']}")
        size = job.prior.image_size
        params.pop("kind", None)
        params.pop("fraction", None)
        params["mask"] = load_mask(job.mask, size)
    if job.kernel is not None:
        if params["name"] not in ("gaussian_blur", "motion_blur"):
            raise ValueError(f"--kernel is for gaussian_blur or motion_blur, not {params['name']}")
        params = {"name": "blur", "kernel": load_kernel(job.kernel), "noise_sigma": params.get("noise_sigma", 0.0)}
    return params


def _load_measurements(job: RestoreJob, paths: list[Path], operator: Operator) -> Tensor:
    """Measured inputs -> y in [-1, 1] units, checked against the size the operator expects."""
    name = job.task["operator"]["name"]
    if name not in IMAGE_MEASUREMENTS:
        raise ValueError(f"task {name}: measurements are not images; use --simulate with clean images")
    size = job.prior.image_size
    if name == "super_resolution":
        scale = operator.scale
        if size % scale:
            raise ValueError(f"the model's size {size} is not divisible by the scale {scale}")
        size = size // scale
    if name == "inpainting" and "mask" not in job.task["operator"] and job.mask is None:
        raise ValueError("inpainting a measured image needs --mask (white = known pixels), or use --simulate")
    if name == "motion_blur" and job.kernel is None:
        raise ValueError("motion deblurring of a measured image needs --kernel (the blur kernel), or use --simulate")
    y = torch.stack([io.load_image(p, size, job.resize) for p in paths])
    y = to_model_range(y).to(job.device)
    return y * operator.mask if name == "inpainting" else y


def measurement_preview(y: Tensor, operator: Operator) -> Tensor:
    """A [0, 1] picture of a measurement: the image itself, or log-magnitudes for phase retrieval."""
    if operator.name == "phase_retrieval":
        mag = torch.log1p(y.clamp_min(0))
        return mag / mag.flatten(1).amax(dim=1).clamp_min(1e-12).reshape(-1, 1, 1, 1)
    return to_image_range(y)


def run_restore(job: RestoreJob) -> dict[str, Any]:
    """Restore every input; write PNGs, grid.png, metrics.json and config.yaml into job.output."""
    if job.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {job.batch_size}")
    job.output.mkdir(parents=True, exist_ok=True)
    params = {**sampler_settings(job.task, job.sampler), **job.sampler_params}
    op_params = _operator_params(job)
    _write_config(job, op_params, params)
    results: dict[str, dict[str, float]] = {}
    rows = []
    batches = [job.inputs[i: i + job.batch_size] for i in range(0, len(job.inputs), job.batch_size)]
    for b, paths in enumerate(tqdm(batches, desc="images", unit="batch", disable=len(batches) < 2)):
        first = b * job.batch_size
        seeds = [job.seed + first + k for k in range(len(paths))]
        operator = make_operator(**op_params).to(job.device)
        if job.simulate:
            clean = torch.stack([io.load_image(p, job.prior.image_size, job.resize) for p in paths]).to(job.device)
            y = simulate(clean, operator, seeds)
        else:
            clean = None
            y = _load_measurements(job, paths, operator)
        restored = restore(y, operator, job.prior, sampler=job.sampler, seed=seeds, **params)
        preview = measurement_preview(y, operator).cpu()
        for k, path in enumerate(paths):
            io.save_image(restored[k], job.output / f"{path.stem}.png")
            io.save_image(preview[k], job.output / f"{path.stem}_measurement.png")
            entry = {"failed": bool(torch.isnan(restored[k]).any())}
            if clean is not None and not entry["failed"]:
                entry.update(image_scores(restored[k], clean[k]))
            results[path.name] = entry
            rows.append(([clean[k].cpu()] if clean is not None else []) + [preview[k], restored[k].cpu()])
    summary = _summarise(results)
    io.save_json({"images": results, "mean": summary}, job.output / "metrics.json")
    io.save_image(io.image_grid(rows), job.output / "grid.png")
    return {"images": results, "mean": summary}


def _summarise(results: dict[str, dict[str, float]]) -> dict[str, float]:
    ok = [r for r in results.values() if not r["failed"]]
    return {key: float(np.mean([r[key] for r in ok])) for key in ("psnr", "ssim") if ok and key in ok[0]}


def _write_config(job: RestoreJob, op_params: dict[str, Any], params: dict[str, Any]) -> None:
    config = {
        "model": job.model_name, "sampler": job.sampler, "sampler_params": params, "seed": job.seed,
        "simulate": job.simulate, "batch_size": job.batch_size,
        "operator": {k: (v if not isinstance(v, Tensor) else f"tensor{tuple(v.shape)}") for k, v in op_params.items()},
        "inputs": [str(p) for p in job.inputs],
    }
    io.atomic_write_bytes(job.output / "config.yaml", yaml.safe_dump(config, sort_keys=False).encode())
