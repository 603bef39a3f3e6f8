"""Any denoising network as a prior: `wrap(net, prediction=..., schedule=...)` ends in the same D(x, sigma).

Samplers work in EDM's variables, x = x0 + sigma n. A schedule says how a network sees a noise level:
what input it takes and what time argument, and which noise range and discrete ladder the prior states.

| schedule | network input | time argument | noise range | ladder (DDPM-chain samplers) |
|---|---|---|---|---|
| `VPDiscrete(alpha_bars)` | x / sqrt(1 + sigma^2) | fractional step index (or nearest) | the ladder's ends | sqrt((1 - abar) / abar) |
| `VPContinuous(beta_min, beta_max)` | x / sqrt(1 + sigma^2) | t in [0, 1] with sigma(t)^2 = exp(beta_min t + (beta_max - beta_min) t^2 / 2) - 1 | sigma(t_min) .. sigma(1) | sigma of 1,000 evenly spaced t |
| `VE(sigma_min, sigma_max)` | x | sigma | as given | 1,000 log-spaced levels |
| `EDM(sigma_min, sigma_max)` | x | sigma | as given | 1,000 log-spaced levels |
| `RectifiedFlow(t_min, t_max)` | x_t = x / (1 + sigma) | t = sigma / (1 + sigma) | t/(1 - t) at the ends | 1,000 log-spaced levels |

And what its output is (alpha = 1 / sqrt(1 + sigma^2), s_vp = sigma alpha, so x_vp = alpha x0 + s_vp n):
- "epsilon": n, so D = x - sigma F;
- "v" (VP schedules): v = alpha n - s_vp x0, so D = alpha x_vp - s_vp v = x / (1 + sigma^2) - s_vp F;
- "x0": the denoised image itself (EDM's preconditioned networks), D = F;
- "score" (VE): grad log p = -n / sigma, so D = x + sigma^2 F;
- "velocity" (rectified flow): d x_t / dt = n - x0, so D = x_t - t F.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

import torch
from torch import Tensor

from ..schedule import ladder_position, sigmas_from_alpha_bars

LADDER_LEVELS = 1000


def _per_image(sigma: Tensor) -> Tensor:
    """One noise level per image, shaped to broadcast over NCHW images."""
    return sigma.reshape(-1, 1, 1, 1)


def log_ladder(sigma_min: float, sigma_max: float, levels: int = LADDER_LEVELS) -> Tensor:
    """`levels` log-spaced noise levels from sigma_min to sigma_max (ascending, float64)."""
    return torch.logspace(math.log10(sigma_min), math.log10(sigma_max), levels, dtype=torch.float64)


@dataclass(frozen=True)
class VPDiscrete:
    """A DDPM network trained on the ladder of `alpha_bars`; `timestep` "interpolate" or "nearest"."""

    alpha_bars: Tensor
    timestep: str = "interpolate"

    def ladder(self) -> Tensor:
        return sigmas_from_alpha_bars(self.alpha_bars.double())

    def inputs(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        position = ladder_position(sigma, self.ladder())
        return x / (1 + _per_image(sigma) ** 2).sqrt(), position.round() if self.timestep == "nearest" else position


@dataclass(frozen=True)
class VPContinuous:
    """A continuous-time VP network (score SDE): t in [t_min, 1], linear beta from beta_min to beta_max."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-5

    def sigma(self, t: Tensor) -> Tensor:
        return (torch.exp(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t ** 2) - 1).sqrt()

    def ladder(self) -> Tensor:
        return self.sigma(torch.linspace(self.t_min, 1, LADDER_LEVELS, dtype=torch.float64))

    def inputs(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        slope = self.beta_max - self.beta_min
        t = ((self.beta_min ** 2 + 2 * slope * torch.log1p(sigma ** 2)).sqrt() - self.beta_min) / slope
        return x / (1 + _per_image(sigma) ** 2).sqrt(), t


@dataclass(frozen=True)
class VE:
    """A variance-exploding network taking (x, sigma) (NCSN/score-SDE VE)."""

    sigma_min: float = 0.01
    sigma_max: float = 100.0

    def ladder(self) -> Tensor:
        return log_ladder(self.sigma_min, self.sigma_max)

    def inputs(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return x, sigma


@dataclass(frozen=True)
class EDM(VE):
    """An EDM-preconditioned network D(x, sigma) (Karras et al. 2022: its `EDMPrecond` returns x0)."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0


@dataclass(frozen=True)
class RectifiedFlow:
    """A flow-matching velocity network on x_t = (1 - t) x0 + t n, t in [t_min, t_max]."""

    t_min: float = 1e-3
    t_max: float = 0.999

    def ladder(self) -> Tensor:
        return log_ladder(self.t_min / (1 - self.t_min), self.t_max / (1 - self.t_max))

    def inputs(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return x / (1 + _per_image(sigma)), sigma / (1 + sigma)


Schedule = Union[VPDiscrete, VPContinuous, VE, EDM, RectifiedFlow]
PREDICTIONS = {VPDiscrete: ("epsilon", "v", "x0"), VPContinuous: ("epsilon", "v", "x0"),
               VE: ("epsilon", "x0", "score"), EDM: ("x0",), RectifiedFlow: ("velocity", "x0")}


class WrappedDenoiser:
    """D(x, sigma) of a callable `net(input, time)` with a declared prediction and schedule (see the module)."""

    def __init__(self, net: Callable[[Tensor, Tensor], Tensor], prediction: str, schedule: Schedule,
                 image_channels: int = 3, image_size: int | None = None) -> None:
        allowed = PREDICTIONS[type(schedule)]
        if prediction not in allowed:
            raise ValueError(f"a {type(schedule).__name__} network predicts one of {allowed}, not {prediction!r}")
        self.net, self.prediction, self.schedule = net, prediction, schedule
        self.image_channels, self.image_size = int(image_channels), image_size
        self.ladder = schedule.ladder()
        self.sigma_min, self.sigma_max = float(self.ladder[0]), float(self.ladder[-1])
        parameters = getattr(net, "parameters", None)
        first = next(iter(parameters()), None) if callable(parameters) else None
        self.device = first.device if first is not None else torch.device("cpu")
        self.description = f"{type(net).__name__} ({prediction} prediction, {type(schedule).__name__} schedule)"

    def __call__(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        return self.denoise(x, sigma)

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """Denoised estimate of x at noise level sigma (a float or one value per image)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        if sigma.numel() not in (1, x.shape[0]):
            raise ValueError(f"got {sigma.numel()} sigmas for a batch of {x.shape[0]} images")
        sigma = sigma.expand(x.shape[0])
        s = sigma.reshape(-1, 1, 1, 1)
        net_input, time = self.schedule.inputs(x, sigma)
        out = self.net(net_input, time)[:, : self.image_channels].to(x.dtype)
        if self.prediction == "epsilon":
            return x - s * out
        if self.prediction == "v":
            return x / (1 + s ** 2) - s / (1 + s ** 2).sqrt() * out
        if self.prediction == "score":
            return x + s ** 2 * out
        if self.prediction == "velocity":
            return net_input - (s / (1 + s)) * out
        return out


def wrap(net: Callable[[Tensor, Tensor], Tensor], prediction: str, schedule: Schedule, image_channels: int = 3,
         image_size: int | None = None) -> WrappedDenoiser:
    """A prior D(x, sigma) from any callable `net(input, time)`; see the module docstring for the conventions."""
    return WrappedDenoiser(net, prediction, schedule, image_channels, image_size)
