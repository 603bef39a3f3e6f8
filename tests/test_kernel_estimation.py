"""The M-step of blind deblurring (`spgd.operators.kernel_estimation`): given the sharp image, the least-squares
kernel under the blur constraints recovers camera-shake kernels it never saw, and its output is a blur kernel."""
from __future__ import annotations

import pytest
import torch
from skimage import data

from spgd.operators import kernel_estimation as ke
from spgd.operators.motion_kernel import motion_kernel

pytestmark = pytest.mark.usefixtures("one_thread")


def photo() -> torch.Tensor:
    return torch.from_numpy(data.astronaut()[100:228, 150:278].copy()).permute(2, 0, 1).double() / 255


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_m_step_recovers_a_motion_kernel_from_the_sharp_image(seed):
    """Relative L2 error against the true kernel (both centred) below 0.08 at noise 0.01 of the range (measured
    0.025-0.053 on these three kernels; 0.02-0.04 without noise)."""
    g = torch.Generator().manual_seed(seed)
    truth = motion_kernel(15, 0.5, g).double()
    x = photo()
    y = ke.blur_circular(x[None], truth)[0] + 0.01 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    found = ke.estimate_kernel(x, y, 15).double()
    aligned = ke.centre_kernel(truth)
    error = float((found - aligned).norm() / aligned.norm())
    assert error < 0.08, error
    assert float(found.min()) >= 0 and abs(float(found.sum()) - 1) < 1e-6  # a blur kernel
    grid = torch.arange(15, dtype=torch.float64) - 7
    assert abs(float((found.sum(1) * grid).sum())) <= 0.5 + 1e-6  # centred to within half a pixel
    assert abs(float((found.sum(0) * grid).sum())) <= 0.5 + 1e-6


def test_the_simplex_projection_is_the_nearest_blur_kernel():
    v = torch.tensor([0.9, 0.5, -0.2, 0.1], dtype=torch.float64)
    p = ke.project_simplex(v)
    assert torch.allclose(p, torch.tensor([0.7, 0.3, 0.0, 0.0], dtype=torch.float64))  # by hand: shift by 0.2
    for _ in range(20):  # the nearest point of the simplex: no other point of it is closer
        other = ke.project_simplex(torch.rand(4, dtype=torch.float64, generator=torch.Generator().manual_seed(_)))
        assert float((v - p).norm()) <= float((v - other).norm()) + 1e-12
