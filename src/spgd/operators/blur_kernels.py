"""The blur kernels a blind deblurring task draws: the families real blur has, at random sizes.

Camera shake (the project's motion generator at a random intensity), defocus (a uniform disc, antialiased) and
Gaussian (isotropic or anisotropic), each at a random odd size up to the window, zero-padded to it and summing
to one: the simulated kernels and training pairs of `blind_deblur`, and the training set of its kernel prior.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .motion_kernel import motion_kernel
from .real_world import _padded, _uniform, mixed_kernel

FAMILIES = (("motion", 0.5), ("gaussian", 0.3), ("disc", 0.2))
MIN_SIZE = 5
MOTION_INTENSITY = (0.3, 0.7)
_DISC_SUPERSAMPLING = 8


def disc_kernel(size: int, radius: float) -> Tensor:
    """The defocus blur of a thin lens: a uniform disc of `radius` pixels, antialiased by supersampling,
    on an odd size x size grid, summing to one."""
    fine = torch.arange(size * _DISC_SUPERSAMPLING, dtype=torch.float64)
    grid = (fine + 0.5) / _DISC_SUPERSAMPLING - size / 2
    inside = (grid[:, None] ** 2 + grid[None, :] ** 2 <= radius ** 2).double()
    k = inside.reshape(size, _DISC_SUPERSAMPLING, size, _DISC_SUPERSAMPLING).mean(dim=(1, 3))
    return (k / k.sum()).float()


def blind_kernel(kernel_size: int, g: torch.Generator | None) -> Tensor:
    """One random blur kernel, kernel_size x kernel_size: a family drawn by FAMILIES' weights, an odd size in
    MIN_SIZE..kernel_size, then the family's own parameters (motion intensity, Gaussian axes and angle, disc
    radius), everything from `g`."""
    sizes = range(MIN_SIZE, kernel_size + 1, 2)
    size = sizes[int(torch.randint(len(sizes), (), generator=g))]
    family = FAMILIES[int(torch.multinomial(torch.tensor([w for _, w in FAMILIES]), 1, generator=g))][0]
    if family == "motion":
        k = motion_kernel(size, _uniform(*MOTION_INTENSITY, g), g)
    elif family == "gaussian":
        profile = "iso" if float(torch.rand((), generator=g)) < 0.5 else "aniso"
        k = mixed_kernel(size, profile, (0.4, max(0.5, size / 6)), g, padded=size)
    else:
        k = disc_kernel(size, _uniform(1.0, size / 2, g))
    return _padded(k.float(), kernel_size)
