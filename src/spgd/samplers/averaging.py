"""The mean of several runs of a sampler on each image: a posterior-mean estimate.

A sampler draws one sample of p(x | y). PSNR and SSIM reward the posterior mean E[x | y] instead: in
expectation a sample's squared error is the mean's plus the posterior variance. The mean of K runs
from independent seeds keeps 1/K of that variance, so it scores higher PSNR than any one run, at K
times the cost, and looks smoother (LPIPS rises). Run 0 of an image starts from the image's own seed,
so one run is exactly the sampler itself.

`antithetic`: the runs come in pairs, the second of each pair from its partner's seeds with every
normal draw negated (-z where the partner drew z; `spgd.seeding.Seeds` with sign -1): antithetic variates. Jia et al. (Antithetic Noise in
Diffusion Models, arXiv 2506.06185) pair the initial noise this way; here the fresh noise of stochastic
samplers is negated too. Where a sampler's result is close to odd in its noise about the mean (the
detail a measurement leaves free), the two errors cancel and a pair keeps far less than half the
variance: for an exactly affine sampler (a Gaussian prior, a linear operator) a pair's mean is the same
for every seed. With an odd K the last run has no twin.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import Tensor

from ..progress import JobProgress
from ..seeding import Seeds, image_seeds, stream_seed
from .common import Trace


def run_seeds(seeds: Sequence[int], k: int) -> list[int]:
    """Seeds of run k of each image: the image's own seed for k = 0, one derived from (seed, k) after."""
    return [int(s) for s in seeds] if k == 0 else [stream_seed(s, f"run-{k}") for s in seeds]


def mean_of_runs(sampler: Callable[..., Tensor], prior: Any, operator: Any, y: Tensor, *, runs: int,
                 antithetic: bool = False, seed: int | Sequence[int] = 0, x_start: Tensor | None = None,
                 trace: Trace | None = None, kept_runs: Any = None, **settings: Any) -> Tensor:
    """The per-image mean of `runs` runs of `sampler` (in its own units): from independent seeds, or with
    `antithetic` as pairs of a seed's draws and their negatives (run 2j + 1 is run 2j's twin).

    An image fails (NaN) if any of its runs fails. `trace` records every run, one after another (its
    curves hold runs x steps entries; a progress display sees every step, a cancel stops any run).
    `kept_runs` (`get(k)` / `put(k, x)`, e.g. files of an interrupted job): run k is taken from it when it
    holds it and put there when done, so a stopped mean loses no finished run (a run depends on its seeds
    alone, so a kept one is the run itself).
    """
    if runs < 1:
        raise ValueError(f"mean_of must be >= 1, got {runs}")
    if runs == 1:
        return sampler(prior, operator, y, x_start=x_start, seed=seed, trace=trace, **settings)
    if x_start is not None:
        raise ValueError("x_start fixes every run's start: a mean of runs needs seeded starts")
    seeds = image_seeds(seed, y.shape[0])
    total = None
    progress = settings.get("progress")
    for k in range(runs):
        if isinstance(progress, JobProgress):
            progress.start_run(k, runs)
        twin = antithetic and k % 2 == 1
        run = Seeds(tuple(run_seeds(seeds, k - 1 if twin else k)), -1 if twin else 1)
        x = kept_runs.get(k) if kept_runs is not None else None
        if x is not None:
            x = x.to(y.device)
        else:
            x = sampler(prior, operator, y, seed=run, trace=trace, **settings)
            if kept_runs is not None:
                kept_runs.put(k, x)
        total = x if total is None else total + x
    return total / runs


__all__ = ["mean_of_runs", "run_seeds"]
