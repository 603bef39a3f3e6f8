"""The Restorer of a diffusion prior: a prior, a posterior sampler and that sampler's resolved settings.

It owns what lies around the sampler's loop: the tiling that covers an image of another size than the
prior's (`spgd.priors.tiled.for_size`), a mean of several runs (`mean_of`, `antithetic`), handing a prior
that draws at random itself the seeds of each run (`for_seeds`), and the stop callback. Trained restorers
(`spgd.diffir.model.DiffIRModel`) implement the same `spgd.protocols.Restorer` contract.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import Tensor

from .priors.tiled import check_tiling, for_size
from .progress import JobProgress
from .protocols import Denoiser, Operator, Stopped
from .samplers import get_sampler, mean_of_runs
from .samplers.common import Trace
from .seeding import image_seeds

__all__ = ["PosteriorRestorer", "Stopped", "stopping_trace"]


def stopping_trace(trace: Trace | None, stop: Callable[[], bool] | None) -> Trace | None:
    """`trace` (a silent one if None) that ends the run once `stop()` is true (`Stopped`); `trace` itself
    without a stop callback."""
    if stop is None:
        return trace
    trace = trace if trace is not None else Trace(keep_images=False, curves=False)
    trace.stop = stop
    return trace


class PosteriorRestorer:
    """A diffusion prior + a posterior sampler with its settings (`mean_of` and `antithetic` included)."""

    def __init__(self, prior: Denoiser, sampler: str, settings: dict[str, Any] | None = None,
                 tiling: str = "blend") -> None:
        check_tiling(tiling)
        get_sampler(sampler)  # an unknown name fails here
        self.prior, self.sampler, self.tiling = prior, sampler, tiling
        self.settings = dict(settings or {})

    @property
    def name(self) -> str:
        return str(getattr(self.prior, "name", type(self.prior).__name__))

    @property
    def description(self) -> str:
        return str(getattr(self.prior, "description", self.name))

    @property
    def image_channels(self) -> int:
        return self.prior.image_channels

    @property
    def image_size(self) -> int | None:
        return self.prior.image_size

    def check(self, operator: Operator) -> None:
        """Every operator is a posterior sampler's: what a sampler needs of it, it checks itself."""

    def describe(self) -> dict[str, Any]:
        return {"sampler": self.sampler, "sampler_settings": dict(self.settings), "tiling": self.tiling}

    def restore(self, operator: Operator, y: Tensor, seeds: Sequence[int], *, x_start: Tensor | None = None,
                trace: Trace | None = None, progress: bool | JobProgress = True, on_nan: str | None = None,
                stop: Callable[[], bool] | None = None, kept_runs: Any = None) -> Tensor:
        """Images in [-1, 1] from measurements y: the sampler, on tiles where the prior is of another size,
        as the mean of `mean_of` runs (`progress`: bars of their own, or ticks of the job's one bar, without
        the tiles' bar; `kept_runs`: finished runs kept across an interruption, `mean_of_runs`)."""
        settings = dict(self.settings)
        if on_nan is not None:
            settings["on_nan"] = on_nan
        runs, antithetic = int(settings.pop("mean_of", 1)), bool(settings.pop("antithetic", False))
        prior = for_size(self.prior, operator.input_shape(y)[-2:], progress=progress is True, tiling=self.tiling)
        sampler = get_sampler(self.sampler)

        def run(prior: Any, operator: Operator, y: Tensor, *, seed: int | Sequence[int] = 0, **kw: Any) -> Tensor:
            for_seeds = getattr(prior, "for_seeds", None)  # random-shift tiles move differently in every run
            return sampler(prior if for_seeds is None else for_seeds(image_seeds(seed, y.shape[0])), operator, y,
                           seed=seed, **kw)

        return mean_of_runs(run, prior, operator, y, runs=runs, antithetic=antithetic, x_start=x_start,
                            seed=list(seeds), trace=stopping_trace(trace, stop), progress=progress,
                            kept_runs=kept_runs, **settings)
