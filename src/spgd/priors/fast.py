"""A faster way to compute the same denoiser: reduced-precision autocast, channels_last, torch.compile.

Samplers keep calling `denoise(x, sigma)`; only how the network runs changes. The preconditioning
and everything outside the network stay float32, so outputs agree closely with the plain path
(checked in tests and in bench/speed.py).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import NetworkDenoiser

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class FastDenoiser(nn.Module):
    """Wraps a network denoiser: network under autocast in `precision`, channels_last memory, optional compile.

    `compile_mode` is passed to torch.compile ("max-autotune-no-cudagraphs", or "reduce-overhead"
    for CUDA graphs when shapes are static). Parameters stay frozen: only inputs get gradients.
    The wrapped prior is changed in place (memory format, compiled network): it belongs to the wrapper.
    """

    def __init__(self, prior: NetworkDenoiser, precision: str = "bf16", channels_last: bool = True,
                 compile: bool = False, compile_mode: str | None = None) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose from {sorted(PRECISIONS)}")
        self.prior = prior.requires_grad_(False)
        self.dtype = PRECISIONS[precision]
        self.channels_last = channels_last
        if channels_last:
            prior.network.to(memory_format=torch.channels_last)
        if compile:
            prior.network = torch.compile(prior.network, mode=compile_mode, dynamic=False)

    @property
    def image_size(self) -> int | None:
        return self.prior.image_size

    @property
    def image_channels(self) -> int:
        return self.prior.image_channels

    @property
    def sigma_min(self) -> float:
        return self.prior.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.prior.sigma_max

    @property
    def ladder(self) -> Tensor:
        return self.prior.ladder

    @property
    def device(self) -> torch.device:
        return self.prior.device

    def recommended(self, task: str, sampler: str) -> dict:
        return self.prior.recommended(task, sampler)

    @property
    def description(self) -> str:
        return f"{getattr(self.prior, 'description', type(self.prior).__name__)}, run in {self.dtype}"

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        return self.denoise(x, sigma)

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """D(x, sigma), float32 in and out; the network itself runs in the chosen precision."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        enabled = self.dtype != torch.float32
        with torch.autocast(device_type=x.device.type, dtype=self.dtype, enabled=enabled):
            return self.prior.denoise(x, sigma).float()
