"""What every sampler shares: starting noise, divergence handling and trajectory recording."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..progress import JobProgress
from ..protocols import Operator, Stopped
from ..seeding import SeedLike, start_draws


class DivergenceError(FloatingPointError):
    """A sampler diverged: NaN/inf, a blown-up data fit or state, or a final fit far above the noise."""

    def __init__(self, sampler: str, step: int, images: Sequence[int], reason: str, hint: str) -> None:
        self.step, self.images, self.reason = step, list(images), reason
        super().__init__(f"{sampler} diverged at step {step} for image(s) {self.images}: {reason}; {hint}")


def require(operator: Operator, capability: str, sampler: str) -> None:
    """A clear error when `operator` lacks what `sampler` needs ("pinv", "svd", "adjoint")."""
    if not operator.supports(capability):
        what = {"pinv": "a pseudo-inverse", "svd": "a singular value decomposition", "adjoint": "an adjoint"}
        hint = getattr(operator, "svd_hint", lambda: "")() if capability == "svd" else ""
        raise ValueError(f"{sampler} needs an operator with {what.get(capability, capability)}; "
                         f"{operator.name} has none{hint} (dps, daps, reddiff, pnpdm and spgd handle every task, "
                         "non-linear ones included)")


def check_start(x_start: Tensor, shape: Sequence[int]) -> None:
    """A user-given starting point must have the shape of the images to restore."""
    if tuple(x_start.shape) != tuple(shape):
        raise ValueError(f"x_start has shape {tuple(x_start.shape)}, expected {tuple(shape)}")


def start_noise(shape: Sequence[int], sigma: float, seed: SeedLike, device: torch.device | str,
                x_start: Tensor | None = None) -> Tensor:
    """x_start if given, else sigma times standard normal noise drawn per image from the seed (with its sign:
    `spgd.seeding.Seeds`)."""
    if x_start is not None:
        check_start(x_start, shape)
        return x_start.to(device=device, dtype=torch.float32).clone()
    return sigma * start_draws(shape[1:], seed, shape[0], "sampler", device)


def flat_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine between a[i] and b[i] seen as flat vectors, per image."""
    return torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-30)


@dataclass
class Trace:
    """Optional per-step record of a run, for plots (the paper's Figure 1) and diagnostics.

    With curves=False nothing is recorded per step (no host synchronisation, no extra work): only
    `failed` is filled. Per outer step otherwise: sigma, the data-fit loss per image, x0hat (if `keep_images`), the state x after
    the step (if `keep_states`), the angle in
    degrees between the likelihood gradient and the prior score, and between consecutive
    likelihood gradients. `failed` maps image index -> step at which it diverged, `reasons` image
    index -> what happened and what to change. `stop`, if given, is asked at every step (by the samplers'
    `DivergenceGuard`) and ends the run with `Stopped` once true.
    """

    keep_images: bool = True
    keep_states: bool = False
    curves: bool = True
    sigma: list[float] = field(default_factory=list)
    loss: list[Tensor] = field(default_factory=list)
    x0hat: list[Tensor] = field(default_factory=list)
    x: list[Tensor] = field(default_factory=list)
    angle_grad_score: list[Tensor] = field(default_factory=list)
    angle_grad_grad: list[Tensor] = field(default_factory=list)
    failed: dict[int, int] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)
    stop: Callable[[], bool] | None = None

    def record(self, sigma: float, loss: Tensor, x0hat: Tensor | None = None, x: Tensor | None = None,
               angle_grad_score: Tensor | None = None, angle_grad_grad: Tensor | None = None) -> None:
        self.sigma.append(float(sigma))
        self.loss.append(loss.detach().cpu())
        if self.keep_images and x0hat is not None:
            self.x0hat.append(x0hat.detach().cpu())
        if self.keep_states and x is not None:
            self.x.append(x.detach().cpu())
        if angle_grad_score is not None:
            self.angle_grad_score.append(angle_grad_score.detach().cpu())
        if angle_grad_grad is not None:
            self.angle_grad_grad.append(angle_grad_grad.detach().cpu())

    def as_dict(self) -> dict[str, object]:
        """Stacked tensors (steps first) for saving with torch.save."""
        out: dict[str, object] = {"sigma": torch.tensor(self.sigma), "failed": dict(self.failed)}
        for name in ("loss", "x0hat", "x", "angle_grad_score", "angle_grad_grad"):
            values = getattr(self, name)
            if values:
                out[name] = torch.stack(values)
        return out


def degrees(cosine: Tensor) -> Tensor:
    return torch.rad2deg(torch.arccos(cosine.clamp(-1, 1)))


# What counts as divergence. The data-fit loss is ||A(x0hat) - y||^2 per image; "residual" below is
# that divided by the measurement's size (y lies in [-1, 1], so a mean squared residual above 1 means
# the estimate left the image range altogether).
BLOWUP_RATIO = 1e4  # the loss this many times its lowest value so far in the run ...
BLOWUP_RESIDUAL = 1.0  # ... with a mean squared residual above this: a blow-up
# A finished run whose mean squared residual is above FINAL_RESIDUAL (and FINAL_NOISE_FACTOR times the
# noise variance) fits the measurement ten times worse than any image in range could: it failed. A run
# stopped after too few steps stays well below (SPGD after 1 of 200 steps: ~11).
FINAL_RESIDUAL = 100.0
FINAL_NOISE_FACTOR = 1e4
STATE_LIMIT = 1e3  # the state's RMS above this times its expected scale (1 for images, ~sigma when noisy)


class DivergenceGuard:
    """Per image, every `every` steps: NaN/inf, a data-fit loss that blew up against its own history, a state
    whose magnitude ran away, and (at the last step) a data fit far above the measurement noise.

    on_nan="raise" raises `DivergenceError` naming the step, the images, what happened and `hint` (the
    parameter to change); "mark" records the step in `failed` (and the trace) and freezes the image as
    NaN, so no caller can mistake it for a result, while the others go on. The lowest loss so far is
    kept on the device (no host synchronisation); checking reads it back, hence `every`.
    """

    def __init__(self, sampler: str, y: Tensor, noise_sigma: float, on_nan: str, every: int, hint: str,
                 trace: Trace | None) -> None:
        if on_nan not in ("raise", "mark"):
            raise ValueError(f"on_nan must be 'raise' or 'mark', got {on_nan!r}")
        self.sampler, self.on_nan, self.every, self.hint, self.trace = sampler, on_nan, max(1, every), hint, trace
        self.size = y[0].numel()
        self.final_residual = max(FINAL_RESIDUAL, FINAL_NOISE_FACTOR * noise_sigma ** 2)
        self.failed: dict[int, int] = {}
        self.alive = torch.ones(y.shape[0], dtype=torch.bool)
        self.best = torch.full((y.shape[0],), math.inf, device=y.device)

    def check(self, step: int, x: Tensor, loss: Tensor | None = None, scale: float = 1.0,
              force: bool = False) -> Tensor:
        """x, with images that diverged by now set to NaN (or a DivergenceError). `loss`: this step's
        ||A(x0hat) - y||^2 per image; `scale`: the state's expected RMS; `force`: check now (the last step).
        A trace's stop callback that says stop ends the run here (`Stopped`)."""
        if self.trace is not None and self.trace.stop is not None and self.trace.stop():
            raise Stopped(step)
        if loss is not None:
            loss = loss.detach().float()
            self.best = torch.minimum(self.best, torch.nan_to_num(loss, nan=math.inf))
        if not force and (step + 1) % self.every:
            return x
        flat = x.detach().flatten(1)
        rms = flat.double().pow(2).mean(dim=1).sqrt()
        bad = {"NaN/inf": ~torch.isfinite(flat).all(dim=1),
               "the state's magnitude ran away (RMS {:.3g})": rms > STATE_LIMIT * scale}
        values = {"the state's magnitude ran away (RMS {:.3g})": rms}
        if loss is not None:
            residual = loss / self.size
            blowup = "the data-fit loss blew up to {:.3g}, over 1e4 times its lowest value in this run"
            bad[blowup] = (loss > BLOWUP_RATIO * self.best) & (residual > BLOWUP_RESIDUAL)
            bad["NaN/inf"] = bad["NaN/inf"] | ~torch.isfinite(loss)
            values[blowup] = loss
            if force:
                final = ("the final data fit (mean squared residual {:.3g}) is far above the measurement noise "
                         f"(limit {self.final_residual:.3g})")
                bad[final], values[final] = residual > self.final_residual, residual
        flags = torch.stack(list(bad.values()), dim=1).cpu()
        values_cpu = {k: v.detach().cpu() for k, v in values.items()}
        newly = [i for i in range(x.shape[0]) if self.alive[i] and bool(flags[i].any())]
        if not newly:
            return x
        reasons = {}
        for i in newly:
            reason = next(k for j, k in enumerate(bad) if bool(flags[i, j]))
            reasons[i] = reason.format(float(values_cpu[reason][i])) if reason in values_cpu else reason
        if self.on_nan == "raise":
            raise DivergenceError(self.sampler, step, newly, reasons[newly[0]], self.hint)
        for i in newly:
            self.failed[i] = step
            self.alive[i] = False
        if self.trace is not None:
            self.trace.failed.update(self.failed)
            self.trace.reasons.update({i: f"{self.sampler} diverged at step {step}: {r}; {self.hint}"
                                       for i, r in reasons.items()})
        dead = (~self.alive).to(x.device).reshape(-1, *([1] * (x.dim() - 1)))
        return torch.where(dead, torch.full_like(x, math.nan), x)

    def forget_losses(self) -> None:
        """Judge the data fit against a fresh history from now on (a sampler that starts a chain on new pixels,
        as DDNM's Mask-Shift does for each tile); failed images stay failed."""
        self.best.fill_(math.inf)

    @property
    def all_failed(self) -> bool:
        """Every image has failed: the sampler can stop (its results are all NaN)."""
        return not bool(self.alive.any())

    def show_loss(self, bar, step: int, loss: Tensor) -> None:
        """Show the mean data-fit loss of the live images on the progress bar, at check steps only
        (reading it is a host synchronisation)."""
        if not bar.disable and (step + 1) % self.every == 0:
            alive = self.alive.to(loss.device)
            bar.set_postfix(loss=f"{loss.detach()[alive].mean().item():.4g}")


class Loop:
    """The bookkeeping around a sampler's steps, so that its body reads like the algorithm: the progress bar
    (with the data-fit loss), the divergence guard (which also asks the trace's stop callback) and the trace.

        loop = Loop("DPS", steps, y, operator.noise_sigma, on_nan, check_every, hint, trace, progress)
        for i in loop:          # ends early once every image has failed
            ...
            x = loop.end_step(i, x, loss, sigma, x0hat)

    `end_step` is `check` (the guard; the last step is always checked) then `record` (the trace's curves and
    the bar's loss); a sampler that must do something between the two calls them apart.
    """

    def __init__(self, name: str, steps: int, y: Tensor, noise_sigma: float, on_nan: str, check_every: int,
                 hint: str, trace: Trace | None, progress: "bool | JobProgress") -> None:
        self.guard = DivergenceGuard(name, y, noise_sigma, on_nan, check_every, hint, trace)
        self.steps, self.trace = steps, trace
        if isinstance(progress, JobProgress):  # the job's one bar
            self.bar, self.steps_iter = progress, progress.steps(steps)
        else:
            self.bar = tqdm(range(steps), desc=name, disable=not progress, leave=False)
            self.steps_iter = iter(self.bar)

    def __iter__(self) -> Iterator[int]:
        for i in self.steps_iter:
            yield i
            if self.guard.all_failed:
                break

    @property
    def all_failed(self) -> bool:
        return self.guard.all_failed

    def check(self, i: int, x: Tensor, loss: Tensor, scale: float = 1.0) -> Tensor:
        """x with the images that diverged by step i set to NaN (`DivergenceGuard.check`)."""
        return self.guard.check(i, x, loss, scale=scale, force=i == self.steps - 1)

    def record(self, i: int, sigma: float, loss: Tensor, x0hat: Tensor | None, x: Tensor | None,
               *angles: Tensor | None) -> None:
        """Step i into the trace (when it keeps curves) and its loss onto the bar."""
        if self.trace is not None and self.trace.curves:
            self.trace.record(sigma, loss, x0hat, x, *angles)
        self.guard.show_loss(self.bar, i, loss)

    def end_step(self, i: int, x: Tensor, loss: Tensor, sigma: float, x0hat: Tensor | None = None, *,
                 scale: float = 1.0, shown: Tensor | None = None, angles: Sequence[Tensor | None] = ()) -> Tensor:
        """`check` then `record` (`shown`: the loss the trace and bar show, when it is not the guard's)."""
        x = self.check(i, x, loss, scale)
        self.record(i, sigma, loss if shown is None else shown, x0hat, x, *angles)
        return x
