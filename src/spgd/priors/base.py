"""What every network prior shares: a frozen network, one noise level per image, its stated noise range."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class NetworkDenoiser(nn.Module):
    """Base of the denoisers D(x, sigma) built around a network.

    Subclasses state `ladder` (ascending float64 noise levels the DDPM-chain samplers walk) and the
    range [sigma_min, sigma_max] continuous samplers clamp to, and implement `denoise`. Only the
    input can carry gradients: the network's parameters are frozen at construction.
    """

    def __init__(self, network: nn.Module, ladder: Tensor, sigma_min: float, sigma_max: float,
                 image_channels: int, image_size: int | None) -> None:
        super().__init__()
        self.network = network.eval().requires_grad_(False)
        self._ladder = ladder.to(torch.float64).cpu()
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.image_channels = int(image_channels)
        self._image_size = image_size

    @property
    def ladder(self) -> Tensor:
        return self._ladder

    @property
    def image_size(self) -> int | None:
        """The side of the images the network was trained on (None: any size)."""
        return self._image_size

    # settings this prior needs where a task preset's (made for the published 256x256 checkpoints) do not
    # suit it: {"samplers": {sampler: {setting: value}}, "tasks": {task: {sampler: {setting: value}}}}
    recommendations: dict = {}

    def recommended(self, task: str, sampler: str) -> dict:
        """The settings this prior recommends for `sampler` on `task` (task-specific ones win)."""
        general = self.recommendations.get("samplers", {}).get(sampler, {})
        return {**general, **self.recommendations.get("tasks", {}).get(task, {}).get(sampler, {})}

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def network_dtype(self) -> torch.dtype:
        return next(self.network.parameters()).dtype

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        return self.denoise(x, sigma)

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    @staticmethod
    def per_image(x: Tensor, sigma: float | Tensor) -> Tensor:
        """sigma as a float32 vector with one value per image of x (a float is shared by all)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            return sigma.expand(x.shape[0])
        if sigma.numel() != x.shape[0]:
            raise ValueError(f"got {sigma.numel()} sigmas for a batch of {x.shape[0]} images")
        return sigma
