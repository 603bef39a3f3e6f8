"""Unconditional sampling from a prior D(x, sigma): EDM-style Heun/Euler ODE or ancestral steps.

The noise levels come from the shared `sigma_schedule` (then a final 0). Image i of a call seeded
with `seed` draws all its noise from its own generator (seed + i, stream "sampler"), so results do
not depend on how the images are split into batches.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .api import to_image_range
from .io import image_grid
from .protocols import Denoiser
from .schedule import clamp_range, sigma_schedule
from .seeding import make_generators, randn_per_image

SOLVERS = ("heun", "euler", "ancestral")


@torch.no_grad()
def sample(prior: Denoiser, n: int, seed: int | Sequence[int] = 0, steps: int = 18, sigma_max: float = 80.0,
           sigma_min: float = 0.002, solver: str = "heun", schedule: str = "poly-7",
           progress: bool = False, size: int | None = None) -> Tensor:
    """n unconditional samples as an NxCxHxW tensor in [0, 1], on the prior's device.

    sigma_max and sigma_min are clamped to the prior's noise range (a linear-VP checkpoint:
    ~0.01 .. ~157). `size` is needed for a prior without a native image size. `solver`: "heun" (2nd order, 2 steps - 1 network calls), "euler" (1st order)
    or "ancestral" (stochastic: each step goes below the next level and adds fresh noise back).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; solvers: {SOLVERS}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    sigma_max, sigma_min = clamp_range(sigma_max, sigma_min, (prior.sigma_min, prior.sigma_max))
    sigmas = sigma_schedule(steps, sigma_max, sigma_min, schedule).tolist()
    device = getattr(prior, "device", torch.device("cpu"))
    size = size or prior.image_size
    if size is None:
        raise ValueError("this prior has no native image size: pass size=")
    shape = (prior.image_channels, size, size)
    generators = make_generators(seed, n, "sampler")
    x = sigmas[0] * randn_per_image(shape, generators, device)
    for s, s_next in tqdm(list(zip(sigmas[:-1], sigmas[1:])), desc="sample", disable=not progress, leave=False):
        d = (x - prior.denoise(x, s)) / s
        if solver == "ancestral":
            s_up = min(s_next, (s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2) ** 0.5)
            s_down = (s_next ** 2 - s_up ** 2) ** 0.5
            x = x + (s_down - s) * d
            if s_up > 0:
                x = x + s_up * randn_per_image(shape, generators, device)
        else:
            x_next = x + (s_next - s) * d
            if solver == "heun" and s_next > 0:
                d_next = (x_next - prior.denoise(x_next, s_next)) / s_next
                x_next = x + (s_next - s) * (d + d_next) / 2
            x = x_next
    return to_image_range(x)


def square_grid(images: Tensor | Sequence[Tensor]) -> Tensor:
    """Images tiled into a near-square grid (rows of ceil(sqrt(N)))."""
    cols = math.ceil(math.sqrt(len(images)))
    return image_grid([list(images[i: i + cols]) for i in range(0, len(images), cols)])
