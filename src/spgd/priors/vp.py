"""VP (DDPM) preconditioning: a network trained on a discrete DDPM ladder as an EDM-style denoiser D(x, sigma).

A VP state x_vp = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps is x_vp = c_in x in EDM variables
(x = x0 + sigma eps, c_in = 1 / sqrt(sigma^2 + 1), alpha_bar = c_in^2). The network gets c_in x and a
timestep for sigma, and predicts
- "epsilon":      D = x - sigma F,
- "v":            D = x / (1 + sigma^2) - sigma c_in F  (v = sqrt(abar) eps - sqrt(1 - abar) x0),
- "x0":           D = F.
Timesteps between the ladder's steps (every sigma a continuous sampler asks for):
- "vp-linear": (M - 1) t(sigma) of the continuous linear VP schedule, t(sigma) =
  (sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)) - beta_min) / beta_d (beta_min 0.1, beta_d 19.9):
  what the published SPGD/DAPS code does with the linear-schedule checkpoints;
- "interpolate": the fractional ladder index, linear in log sigma between two steps (the continuous
  inverse of any discrete alpha_bar), clamped to the ends;
- "nearest": the index of the nearest step in log sigma.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..schedule import NUM_TIMESTEPS, ladder_position, linear_alpha_bars, sigmas_from_alpha_bars, vp_sigma_to_t
from .base import NetworkDenoiser

PREDICTIONS = ("epsilon", "v", "x0")  # `spgd.priors.wrap`'s names of the same three
TIMESTEPS = ("vp-linear", "interpolate", "nearest")


class VPDenoiser(NetworkDenoiser):
    """D(x, sigma) for a network F(x_vp, t) trained on the DDPM ladder of `alpha_bars` (linear by default)."""

    def __init__(self, network: nn.Module, alpha_bars: Tensor | None = None, prediction: str = "epsilon",
                 timestep: str = "vp-linear") -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction type {prediction!r}; known: {PREDICTIONS}")
        if timestep not in TIMESTEPS:
            raise ValueError(f"unknown timestep map {timestep!r}; known: {TIMESTEPS}")
        alpha_bars = linear_alpha_bars() if alpha_bars is None else alpha_bars.double()
        ladder = sigmas_from_alpha_bars(alpha_bars)
        config = getattr(network, "config", None)
        super().__init__(network, ladder, float(ladder[0]), float(ladder[-1]),
                         int(getattr(config, "in_channels", 3)), getattr(config, "image_size", None))
        self.prediction, self.timestep = prediction, timestep

    def timesteps(self, sigma: Tensor) -> Tensor:
        """The network's timestep input for noise levels `sigma` (see the module docstring)."""
        if self.timestep == "vp-linear":
            return (NUM_TIMESTEPS - 1) * vp_sigma_to_t(sigma)
        position = ladder_position(sigma, self.ladder)
        return position.round() if self.timestep == "nearest" else position

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """Denoised estimate of x at noise level sigma (a float or one value per image)."""
        sigma = self.per_image(x, sigma)
        s = sigma.reshape(-1, 1, 1, 1)
        c_in = 1 / (s ** 2 + 1).sqrt()
        out = self.network((c_in * x).to(self.network_dtype), self.timesteps(sigma))
        out = out[:, : self.image_channels].to(x.dtype)
        if self.prediction == "epsilon":
            return x - s * out
        if self.prediction == "v":
            return x / (1 + s ** 2) - s * c_in * out
        return out
