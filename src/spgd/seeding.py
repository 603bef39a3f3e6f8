"""One torch.Generator per image, derived from a seed, so results never depend on batch size.

Image i of a batch seeded with `seed` uses seed + i (or the i-th seed of a list). Different uses
("measure", "sampler", ...) get independent streams from the same seed, so the measurement noise
and the sampler's starting noise are never the same draws.

A run's seed may be a `Seeds`, which carries the sign of the run's normal draws explicitly: the antithetic
twin of a run (`mean_of` with `antithetic`) is handed its partner's seeds with sign -1, and sees -z wherever
its partner saw z (`start_draws`, `StepNoise`), from the same generators. Nothing global is switched.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence, Union

import torch


@dataclass(frozen=True)
class Seeds:
    """Per-image seeds and the sign (+1 or -1) of every normal draw a run makes from them."""

    values: tuple[int, ...]
    sign: int = 1


SeedLike = Union[int, Sequence[int], Seeds]


def draw_sign(seed: SeedLike) -> int:
    """The sign of the normal draws made from `seed`: -1 for an antithetic twin's `Seeds`, else +1."""
    return seed.sign if isinstance(seed, Seeds) else 1


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for `stream`, derived from `seed` by hashing (stable across runs and platforms)."""
    digest = hashlib.sha256(f"{stream}:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def image_seeds(seed: SeedLike, batch: int) -> list[int]:
    """Per-image seeds: seed + i for an int, the list (or a `Seeds`' values) itself, checked for length."""
    if isinstance(seed, int):
        return [seed + i for i in range(batch)]
    seeds = [int(s) for s in (seed.values if isinstance(seed, Seeds) else seed)]
    if len(seeds) != batch:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {batch} images")
    return seeds


def make_generators(seed: SeedLike, batch: int, stream: str) -> list[torch.Generator]:
    """CPU generators, one per image, for the given use."""
    return [torch.Generator().manual_seed(stream_seed(s, stream)) for s in image_seeds(seed, batch)]


def randn_per_image(shape: Sequence[int], generators: Sequence[torch.Generator | None],
                    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A batch of standard normal tensors of `shape` (per image), image i drawn from generators[i]."""
    noise = [torch.randn(tuple(shape), generator=g, dtype=torch.float32) for g in generators]
    return torch.stack(noise).to(device=device, dtype=dtype)


def start_draws(shape: Sequence[int], seed: SeedLike, batch: int, stream: str,
                device: torch.device | str = "cpu") -> torch.Tensor:
    """A run's standard normal draws of `shape` for each of `batch` images, from its seeds' generators of
    `stream`, with the seeds' sign (`Seeds`)."""
    noise = randn_per_image(shape, make_generators(seed, batch, stream), device)
    return -noise if draw_sign(seed) < 0 else noise


class StepNoise:
    """Fresh standard normal noise at each call, image i drawn from its own generator on the images' device.

    On the CPU the generators are exactly `make_generators(seed, batch, stream)`; on an accelerator
    they are device generators with the same per-image seeds, so no draw passes through the host
    and a batch of three still equals three runs of one (CPU and GPU draws differ from each other).
    """

    def __init__(self, seed: SeedLike, batch: int, stream: str, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.sign = draw_sign(seed)
        if self.device.type == "cpu":
            self.generators = make_generators(seed, batch, stream)
        else:
            self.generators = [torch.Generator(device=self.device).manual_seed(stream_seed(s, stream))
                               for s in image_seeds(seed, batch)]

    def __call__(self, shape: Sequence[int]) -> torch.Tensor:
        noise = torch.stack([torch.randn(tuple(shape), generator=g, device=self.device) for g in self.generators])
        return -noise if self.sign < 0 else noise
