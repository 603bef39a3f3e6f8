"""EDM preconditioning (Karras et al., NeurIPS 2022): a network F trained to be a well-scaled denoiser.

D(x, sigma) = c_skip x + c_out F(c_in x, c_noise) with sigma_data the data's standard deviation,
c_skip = sigma_data^2 / (sigma^2 + sigma_data^2), c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
c_in = 1 / sqrt(sigma^2 + sigma_data^2). At high noise D is the network's own estimate of x0 (no
amplification of its error by sigma, unlike epsilon prediction), which is what lets a small network
trained briefly stay stable at the sigma_max = 80-100 of the published samplers.

c_noise: EDM uses ln(sigma)/4 with its own networks; an ADM UNet embeds timesteps 0..999, so the
noise level enters as 999 t_VP(sigma) (the linear-VP time of that sigma), a monotone map onto the
range the ADM embedding was designed for. The network is defined at every sigma: the stated range
is [0.002, ~157] and the ladder the standard linear one, so DDPM-chain samplers run unchanged.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..schedule import NUM_TIMESTEPS, linear_ladder, vp_sigma_to_t
from .base import NetworkDenoiser

SIGMA_DATA = 0.5
SIGMA_MIN = 0.002


def edm_coefficients(sigma: Tensor, sigma_data: float = SIGMA_DATA) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in, c_noise) at noise levels `sigma` (any shape)."""
    total = sigma ** 2 + sigma_data ** 2
    c_noise = (NUM_TIMESTEPS - 1) * vp_sigma_to_t(sigma)
    return sigma_data ** 2 / total, sigma * sigma_data / total.sqrt(), 1 / total.sqrt(), c_noise


class EDMDenoiser(NetworkDenoiser):
    """D(x, sigma) of an ADM network trained with the EDM objective (`spgd train --objective edm`)."""

    def __init__(self, network: nn.Module, sigma_data: float = SIGMA_DATA) -> None:
        ladder = linear_ladder()
        config = network.config
        super().__init__(network, ladder, SIGMA_MIN, float(ladder[-1]), int(config.in_channels),
                         int(config.image_size))
        self.sigma_data = sigma_data

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """Denoised estimate of x at noise level sigma (a float or one value per image)."""
        sigma = self.per_image(x, sigma)
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
        c_skip, c_out, c_in = (c.reshape(-1, 1, 1, 1) for c in (c_skip, c_out, c_in))
        out = self.network((c_in * x).to(self.network_dtype), c_noise)[:, : self.image_channels]
        return c_skip * x + c_out * out.to(x.dtype)
