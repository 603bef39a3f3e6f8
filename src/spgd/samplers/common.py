"""What every sampler shares: starting noise, divergence handling and trajectory recording."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from ..protocols import Operator
from ..seeding import make_generators, randn_per_image


class DivergenceError(FloatingPointError):
    """A sampler produced NaN or inf."""

    def __init__(self, sampler: str, step: int, images: Sequence[int], hint: str) -> None:
        self.step, self.images = step, list(images)
        super().__init__(f"{sampler} diverged (NaN/inf) at step {step} for image(s) {self.images}; {hint}")


def require(operator: Operator, capability: str, sampler: str) -> None:
    """A clear error when `operator` lacks what `sampler` needs ("pinv", "svd", "adjoint")."""
    if not operator.supports(capability):
        what = {"pinv": "a pseudo-inverse", "svd": "a singular value decomposition", "adjoint": "an adjoint"}
        raise ValueError(f"{sampler} needs an operator with {what.get(capability, capability)}; "
                         f"{operator.name} has none (dps, daps, reddiff and spgd handle every task, "
                         "non-linear ones included)")


def check_start(x_start: Tensor, shape: Sequence[int]) -> None:
    """A user-given starting point must have the shape of the images to restore."""
    if tuple(x_start.shape) != tuple(shape):
        raise ValueError(f"x_start has shape {tuple(x_start.shape)}, expected {tuple(shape)}")


def start_noise(shape: Sequence[int], sigma: float, seed: int | Sequence[int], device: torch.device | str,
                x_start: Tensor | None = None) -> Tensor:
    """x_start if given, else sigma times standard normal noise drawn per image from the seed."""
    if x_start is not None:
        check_start(x_start, shape)
        return x_start.to(device=device, dtype=torch.float32).clone()
    generators = make_generators(seed, shape[0], "sampler")
    return sigma * randn_per_image(shape[1:], generators, device)


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
    likelihood gradients. `failed` maps image index -> step at which it diverged.
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


class FiniteGuard:
    """Checks per image for NaN/inf every `every` steps; raises, or marks images failed and freezes them.

    Checking is a host synchronisation, hence `every`. Failed images are returned as NaN so no
    caller can mistake them for results.
    """

    def __init__(self, sampler: str, batch: int, on_nan: str, every: int, hint: str,
                 trace: Trace | None) -> None:
        if on_nan not in ("raise", "mark"):
            raise ValueError(f"on_nan must be 'raise' or 'mark', got {on_nan!r}")
        self.sampler, self.on_nan, self.every, self.hint, self.trace = sampler, on_nan, max(1, every), hint, trace
        self.failed: dict[int, int] = {}
        self.alive = torch.ones(batch, dtype=torch.bool)

    def check(self, step: int, x: Tensor, force: bool = False) -> Tensor:
        if not force and (step + 1) % self.every:
            return x
        finite = torch.isfinite(x.detach()).flatten(1).all(dim=1).cpu()
        newly = [i for i in range(x.shape[0]) if self.alive[i] and not finite[i]]
        if not newly:
            return x
        if self.on_nan == "raise":
            raise DivergenceError(self.sampler, step, newly, self.hint)
        for i in newly:
            self.failed[i] = step
            self.alive[i] = False
        if self.trace is not None:
            self.trace.failed.update(self.failed)
        dead = (~self.alive).to(x.device).reshape(-1, *([1] * (x.dim() - 1)))
        return torch.where(dead, torch.full_like(x, math.nan), x)

    def show_loss(self, bar, step: int, loss: Tensor) -> None:
        """Show the mean data-fit loss of the live images on the progress bar, at check steps only
        (reading it is a host synchronisation)."""
        if not bar.disable and (step + 1) % self.every == 0:
            alive = self.alive.to(loss.device)
            bar.set_postfix(loss=f"{loss.detach()[alive].mean().item():.4g}")
