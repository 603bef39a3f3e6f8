"""One torch.Generator per image, derived from a seed, so results never depend on batch size.

Image i of a batch seeded with `seed` uses seed + i (or the i-th seed of a list). Different uses
("measure", "sampler", ...) get independent streams from the same seed, so the measurement noise
and the sampler's starting noise are never the same draws.

Inside `negated_draws()` every standard normal draw made here comes out negated: the antithetic twin of
a run (`mean_of` with `antithetic`) sees -z wherever its partner saw z, from the same generators.
"""
from __future__ import annotations

import contextvars
import hashlib
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

_NEGATED = contextvars.ContextVar("spgd_negated_draws", default=False)


@contextmanager
def negated_draws() -> Iterator[None]:
    """Within: `randn_per_image` and `StepNoise` return the negatives of their draws (antithetic runs)."""
    token = _NEGATED.set(True)
    try:
        yield
    finally:
        _NEGATED.reset(token)


def _signed(noise: torch.Tensor) -> torch.Tensor:
    return -noise if _NEGATED.get() else noise


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for `stream`, derived from `seed` by hashing (stable across runs and platforms)."""
    digest = hashlib.sha256(f"{stream}:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def image_seeds(seed: int | Sequence[int], batch: int) -> list[int]:
    """Per-image seeds: seed + i for an int, the list itself (checked for length) otherwise."""
    if isinstance(seed, int):
        return [seed + i for i in range(batch)]
    seeds = [int(s) for s in seed]
    if len(seeds) != batch:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {batch} images")
    return seeds


def make_generators(seed: int | Sequence[int], batch: int, stream: str) -> list[torch.Generator]:
    """CPU generators, one per image, for the given use."""
    return [torch.Generator().manual_seed(stream_seed(s, stream)) for s in image_seeds(seed, batch)]


def randn_per_image(shape: Sequence[int], generators: Sequence[torch.Generator | None],
                    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A batch of standard normal tensors of `shape` (per image), image i drawn from generators[i]."""
    noise = [torch.randn(tuple(shape), generator=g, dtype=torch.float32) for g in generators]
    return _signed(torch.stack(noise)).to(device=device, dtype=dtype)


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

    def __call__(self, shape: Sequence[int]) -> torch.Tensor:
        return _signed(torch.stack([torch.randn(tuple(shape), generator=g, device=self.device) for g in self.generators]))
