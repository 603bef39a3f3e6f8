"""A prior on blur kernels: a small denoiser of kernels, the plug-and-play kernel prior of Fast Diffusion EM's M-step.

Fast Diffusion EM (Laroche et al., WACV 2024) regularises its kernel update with a trained kernel denoiser, an
FDnCNN (a kernel and a constant noise-level map in, the kernel's noise out; 5 convolutions of 32 channels) used
in half-quadratic splitting. `KernelDenoiser` is that network for size x size kernels scaled so that their
largest tap is 1, trained here (`train_kernel_denoiser`) on the kernels `spgd.operators.blind_blur` draws (camera
shake, defocus discs, Gaussians; odd sizes 5-31) with Gaussian noise of a level drawn per kernel; its
`denoise(k, sigma)` returns a blur kernel again (non-negative, summing to one). The built-in file is
`builtin:kernel31` (`load_kernel_prior`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .blur_kernels import blind_kernel

BUILTIN = Path(__file__).parent / "kernel31.safetensors"
SIGMA_RANGE = (0.0, 0.2)  # the noise levels it was trained on, relative to the kernel's largest tap


class KernelDenoiser(nn.Module):
    """FDnCNN for kernels: input (kernel / its max, noise map), `depth` 3x3 convolutions of `width` channels with
    ReLUs between, residual output (the noise), so that D(k, sigma) = k - net([k, sigma])."""

    def __init__(self, width: int = 32, depth: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(2, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.width, self.depth = width, depth

    def forward(self, k: Tensor, sigma: Tensor) -> Tensor:
        """The denoised N x 1 x S x S kernels (scaled to peak 1) from noisy ones, sigma per kernel (N)."""
        level = sigma.view(-1, 1, 1, 1).expand_as(k)
        return k - self.body(torch.cat([k, level], dim=1))

    def denoise(self, k: Tensor, sigma: float) -> Tensor:
        """A blur kernel (S x S or N x S x S, any scale) denoised at noise level `sigma` relative to its peak: the
        result is non-negative and sums to one."""
        shape = k.shape
        k = k.reshape(-1, 1, *shape[-2:]).float()
        peak = k.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-12)
        with torch.no_grad():
            out = self(k / peak, torch.full((k.shape[0],), float(sigma))).clamp(min=0)
        out = out / out.sum(dim=(-2, -1), keepdim=True).clamp(min=1e-12)
        return out.reshape(shape)


def training_batch(batch: int, size: int, step: int) -> tuple[Tensor, Tensor, Tensor]:
    """(noisy, clean, sigma) of step `step`: `batch` kernels drawn by `blind_kernel` (each from its own seeded
    generator), scaled to peak 1, with Gaussian noise of a level drawn uniformly in SIGMA_RANGE."""
    g = torch.Generator().manual_seed(step)
    clean = torch.stack([blind_kernel(size, torch.Generator().manual_seed(step * batch + i + 10_000_000))
                         for i in range(batch)])[:, None]
    clean = clean / clean.amax(dim=(-2, -1), keepdim=True)
    sigma = SIGMA_RANGE[0] + (SIGMA_RANGE[1] - SIGMA_RANGE[0]) * torch.rand(batch, generator=g)
    noisy = clean + sigma.view(-1, 1, 1, 1) * torch.randn(clean.shape, generator=g)
    return noisy, clean, sigma


def train_kernel_denoiser(out: Path, steps: int = 3000, batch: int = 32, size: int = 31, lr: float = 1e-3,
                          log: Any = print) -> KernelDenoiser:
    """Train `KernelDenoiser` with L2 on fresh kernels every step (Adam, cosine decay), saved to `out` with its
    training facts as metadata; logs the mean loss every 250 steps."""
    torch.manual_seed(0)
    net = KernelDenoiser()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    running = 0.0
    for step in range(steps):
        noisy, clean, sigma = training_batch(batch, size, step)
        loss = (net(noisy, sigma) - clean).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        running += loss.item()
        if (step + 1) % 250 == 0:
            log(f"step {step + 1}: loss {running / 250:.3g} (PSNR {10 * math.log10(250 / max(running, 1e-12)):.2f} dB)")
            running = 0.0
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out),
              metadata={"size": str(size), "width": str(net.width), "depth": str(net.depth), "steps": str(steps),
                        "data": "blind_kernel draws (motion, disc, Gaussian; odd sizes 5-31), seeds from 1e7"})
    return net


def load_kernel_prior(source: str | Path = "builtin:kernel31") -> KernelDenoiser:
    """The kernel denoiser in `source` (a file `train_kernel_denoiser` wrote, or builtin:kernel31)."""
    path = BUILTIN if str(source) == "builtin:kernel31" else Path(source)
    if not path.is_file():
        raise ValueError(f"kernel prior not found: {source}")
    state = load_file(str(path))
    depth = sum(1 for key in state if key.endswith(".weight"))
    net = KernelDenoiser(width=state["body.0.weight"].shape[0], depth=depth)
    net.load_state_dict(state)
    return net.eval()
