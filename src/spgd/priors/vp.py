"""VP (DDPM) preconditioning: turns an epsilon-predicting network into an EDM-style denoiser D(x, sigma).

With the linear beta schedule (beta_min 0.1, beta_d 19.9 in continuous time, M = 1000 steps):
c_in = 1/sqrt(sigma^2 + 1), t(sigma) = (sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)) - beta_min) / beta_d,
c_noise = (M - 1) t(sigma), and D(x, sigma) = x - sigma * F(c_in x, c_noise)[:, :3].
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

BETA_MIN = 0.1
BETA_D = 19.9
NUM_TIMESTEPS = 1000


def sigma_to_t(sigma: Tensor) -> Tensor:
    """Continuous VP time in [0, 1] at which the marginal noise level (in x / alpha units) is sigma."""
    return ((BETA_MIN ** 2 + 2 * BETA_D * torch.log1p(sigma ** 2)).sqrt() - BETA_MIN) / BETA_D


def t_to_sigma(t: Tensor) -> Tensor:
    """Inverse of `sigma_to_t`."""
    return (torch.exp(0.5 * BETA_D * t ** 2 + BETA_MIN * t) - 1).sqrt()


def discrete_sigmas(num_timesteps: int = NUM_TIMESTEPS) -> Tensor:
    """sigma_k = sqrt((1 - alpha_bar_k) / alpha_bar_k) of the discrete linear schedule (1e-4 .. 0.02)."""
    betas = torch.linspace(1e-4, 0.02, num_timesteps, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, dim=0)
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def alpha_bars(num_timesteps: int = NUM_TIMESTEPS) -> Tensor:
    """alpha_bar_t = 1 / (1 + sigma_t^2) of the discrete linear schedule, t = 0..999 (float64)."""
    return 1 / (1 + discrete_sigmas(num_timesteps) ** 2)


class VPDenoiser(nn.Module):
    """D(x, sigma) for a network trained with the DDPM epsilon objective.

    Only the input can carry gradients: the network's parameters are frozen at construction.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self.image_channels = int(network.config.in_channels)

    @property
    def image_size(self) -> int:
        return int(self.network.config.image_size)

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        return self.denoise(x, sigma)

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """Denoised estimate of x at noise level sigma (a float or one value per image)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        elif sigma.numel() != x.shape[0]:
            raise ValueError(f"got {sigma.numel()} sigmas for a batch of {x.shape[0]} images")
        s = sigma.reshape(-1, 1, 1, 1)
        c_in = 1 / (s ** 2 + 1).sqrt()
        c_noise = (NUM_TIMESTEPS - 1) * sigma_to_t(sigma)
        net_dtype = next(self.network.parameters()).dtype
        eps = self.network((c_in * x).to(net_dtype), c_noise)[:, : self.image_channels]
        return x - s * eps.to(x.dtype)

