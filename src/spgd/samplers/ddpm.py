"""What the DDPM-chain samplers (DPS, RED-diff, DeqIR) share: the discrete schedule and per-step noise.

The 1,000-step linear-beta DDPM chain seen through the EDM denoiser: a VP state x_vp at step t is
x_vp = sqrt(alpha_bar_t) * x with x = x0 + sigma_t * noise, sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t),
so `prior.denoise(x_vp / sqrt(alpha_bar_t), sigma_t)` is the DDPM x0-prediction.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..priors.vp import NUM_TIMESTEPS
from ..seeding import image_seeds, make_generators, stream_seed


def respaced_timesteps(steps: int) -> list[int]:
    """`steps` timesteps spread evenly over 0..999, both ends included (guided-diffusion's respacing)."""
    _check_steps(steps)
    if steps == 1:
        return [NUM_TIMESTEPS - 1]
    stride = (NUM_TIMESTEPS - 1) / (steps - 1)
    return [round(i * stride) for i in range(steps)]


def strided_timesteps(steps: int) -> list[int]:
    """range(0, 1000, 1000 // steps) (the DDIM-style "uniform" skip); `steps` must divide 1000.

    Other counts would stop the chain short of the top (steps=600 ends at t=599), so that the
    starting noise x_T ~ N(0, I) would not match the first timestep.
    """
    _check_steps(steps)
    if NUM_TIMESTEPS % steps:
        divisors = [d for d in (10, 20, 25, 40, 50, 100, 125, 200, 250, 500, 1000) if d <= NUM_TIMESTEPS]
        raise ValueError(f"steps must divide {NUM_TIMESTEPS} for this chain (e.g. {divisors}), got {steps}")
    return list(range(0, NUM_TIMESTEPS, NUM_TIMESTEPS // steps))


def _check_steps(steps: int) -> None:
    if not 1 <= steps <= NUM_TIMESTEPS:
        raise ValueError(f"steps must be in 1..{NUM_TIMESTEPS} (the discrete DDPM chain), got {steps}")


class StepNoise:
    """Fresh standard normal noise at each call, image i drawn from its own generator on the images' device.

    On the CPU the generators are exactly `make_generators(seed, batch, stream)`; on an accelerator
    they are device generators with the same per-image seeds, so no draw passes through the host
    and a batch of three still equals three runs of one (CPU and GPU draws differ from each other).
    """

    def __init__(self, seed: int | Sequence[int], batch: int, stream: str, device: torch.device | str) -> None:
        self.device = torch.device(device)
        if self.device.type == "cpu":
            self.generators = make_generators(seed, batch, stream)
        else:
            self.generators = [torch.Generator(device=self.device).manual_seed(stream_seed(s, stream))
                               for s in image_seeds(seed, batch)]

    def __call__(self, shape: Sequence[int]) -> Tensor:
        return torch.stack([torch.randn(tuple(shape), generator=g, device=self.device) for g in self.generators])
