"""Devices checked up front: a device that does not exist is a one-line error naming it, not a
traceback from deep inside torch at the first allocation."""
from __future__ import annotations

import torch


def resolve_device(name: str | torch.device) -> torch.device:
    """`name` as a torch.device that this machine has; ValueError saying why not otherwise."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {str(name)!r}: not a device name (use cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device {str(name)!r}: {why}; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {str(name)!r}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(name)!r}: Apple's MPS backend is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps", "meta"):
        raise ValueError(f"device {str(name)!r}: not supported by spgd (use cpu, cuda or mps)")
    return device


def check_precision(precision: str, device: torch.device) -> None:
    """bf16 needs a GPU that computes in it (or the CPU); a clear error otherwise."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--precision bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; "
                         "use --precision fp16 or fp32")
