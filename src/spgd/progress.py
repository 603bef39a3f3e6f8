"""One progress bar for a whole restore job: every step of every run of every image, so its ETA is the job's.

A restore job knows its work before it starts (per batch: runs x steps, from the resolved settings), so
`JobProgress` opens one bar of that many steps. The samplers' `Loop` ticks it once per step (instead of a bar
of its own per run), `mean_of_runs` names the run, and the job snaps it to each batch's planned end when the
batch is written, so a method without a step loop (a trained restorer) or with another step count still lands
exactly. Passed where a sampler takes `progress` (True/False keep their own bars).
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

from tqdm.auto import tqdm


class JobProgress:
    """`units`: the steps each batch is planned to take (runs x steps); `disable`: no bar (tests, a page)."""

    def __init__(self, units: Sequence[int], disable: bool = False) -> None:
        self.ends = [sum(units[: b + 1]) for b in range(len(units))]
        self.bar = tqdm(total=self.ends[-1] if self.ends else 0, unit="step", desc="restore", disable=disable,
                        dynamic_ncols=True)
        self.disable = self.bar.disable
        self.batch, self.label, self.run = 0, "", ""

    def start_batch(self, b: int, label: str) -> None:
        """Batch b (its images named in `label`) begins."""
        self.batch, self.label, self.run = b, label, ""
        self._describe()

    def start_run(self, k: int, runs: int) -> None:
        """Run k of the `runs` a mean averages begins."""
        self.run = f"run {k + 1}/{runs}" if runs > 1 else ""
        self._describe()

    def steps(self, count: int) -> Iterator[int]:
        """range(count), ticking the bar once per step, never past the batch's planned end."""
        for i in range(count):
            yield i
            if self.bar.n < self.ends[self.batch]:
                self.bar.update(1)

    def set_postfix(self, **values: Any) -> None:
        self.bar.set_postfix(**values)

    def end_batch(self) -> None:
        """The batch is written: the bar stands at its planned end whatever its methods ticked."""
        self.bar.update(self.ends[self.batch] - self.bar.n)

    def close(self, failed: bool = False) -> None:
        """Close the bar; `failed`: erase it, so that the error that ended the job stands alone."""
        if failed:
            self.bar.leave = False
        self.bar.close()

    def _describe(self) -> None:
        self.bar.set_description(" ".join(part for part in (self.label, self.run) if part))
