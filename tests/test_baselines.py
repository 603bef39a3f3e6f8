"""Classical baselines: each recovers what it should (smooth images, harmonic fills, noise-free blur),
per image, in range, and refuses combinations that do not apply."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import spgd
from spgd.baselines import (
    METHODS,
    baseline_methods,
    classical_restore,
    richardson_lucy_iterations,
    wiener_balance,
)
from spgd.metrics import psnr
from spgd.operators import Blur, Inpainting, PhaseRetrieval
from spgd.tasks import load_task

pytestmark = pytest.mark.usefixtures("one_thread")


def db(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR of two [-1, 1] batches, on [0, 1]."""
    return float(psnr((a + 1) / 2, (b + 1) / 2).mean())


def scene(seed: int, size: int = 64) -> torch.Tensor:
    """A natural-ish 1x3xHxW image in [-1, 1]: smooth shading with sharp-edged discs."""
    g = torch.Generator().manual_seed(seed)
    image = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(size, size), mode="bicubic",
                          align_corners=False)[0]
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for _ in range(6):
        cy, cx, r = torch.randint(0, size, (3,), generator=g).tolist()
        image[:, (rows - cy) ** 2 + (cols - cx) ** 2 < (r % 12 + 3) ** 2] = torch.rand(3, 1, generator=g)
    return (image.clamp(0, 1) * 2 - 1)[None].double()


def test_bicubic_recovers_a_smooth_image_at_the_right_pixel_positions():
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    x = torch.stack([0.6 * torch.cos(2 * math.pi * f * rows / 64 + phase) * torch.cos(2 * math.pi * g * cols / 64)
                     for f, g, phase in ((1, 1, 0.0), (1, 2, 1.0), (2, 1, 2.0))])[None]
    op = spgd.make_operator("super_resolution", scale=4)
    y = op.A(x)
    restored = classical_restore(y, op, "bicubic")
    assert restored.shape == x.shape
    assert db(restored, x) > 40  # 43.9 measured
    # the half-pixel geometry matters: corner-aligned bicubic of the same y is 12 dB worse
    assert db(restored, x) > db(F.interpolate(y, size=(64, 64), mode="bicubic", align_corners=True), x) + 8


def test_biharmonic_fills_holes_of_a_quadratic_image_exactly():
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    x = torch.stack([0.3 * rows**2 - 0.2 * rows * cols + 0.1 * cols + 0.2, -0.4 * cols**2 + 0.3 * rows,
                     0.25 * (rows + cols) ** 2 - 0.5])[None].double()
    mask = torch.ones(1, 1, 32, 32, dtype=torch.float64)
    mask[..., 8:20, 6:18] = 0  # a box and scattered pixels, inside a 3-pixel frame
    mask[..., 3:-3, 3:-3] *= torch.rand(26, 26, generator=torch.Generator().manual_seed(0)) > 0.5
    op = Inpainting(mask=mask)
    restored = classical_restore(op.A(x), op, "biharmonic")
    holes = (mask == 0).expand_as(x)
    assert holes.sum() > 1000
    assert (restored - x)[holes].abs().max() < 1e-5  # 7e-8 measured
    assert (restored - x)[~holes].abs().max() < 1e-12


def test_masks_and_kernels_are_used_per_image():
    x = torch.cat([scene(0, 32), scene(1, 32)]).float()
    for task, method in (({"name": "inpainting", "kind": "random", "noise_sigma": 0.01}, "biharmonic"),
                         ({"name": "motion_blur", "kernel_size": 9, "noise_sigma": 0.01}, "wiener")):
        batch_op = spgd.make_operator(**task)
        both = classical_restore(spgd.simulate((x + 1) / 2, batch_op, [3, 4]), batch_op, method)
        drawn = batch_op.mask if method == "biharmonic" else batch_op.kernel
        assert not torch.equal(drawn[0], drawn[1]), task
        for k in range(2):
            op = spgd.make_operator(**task)
            alone = classical_restore(spgd.simulate((x[k:k + 1] + 1) / 2, op, [3 + k]), op, method)
            assert torch.allclose(both[k:k + 1], alone, atol=1e-6), (task, k)


def test_noise_free_gaussian_blur_is_deconvolved():
    """The preset's 61x61 std-3 blur (reflect padding reaches 30 pixels into a 64-pixel image)."""
    x = torch.cat([scene(0), scene(1)])
    op = spgd.make_operator("gaussian_blur", kernel_size=61, std=3.0)
    y = op.A(x)
    blurred = db(y, x)
    assert db(classical_restore(y, op, "wiener"), x) > blurred + 6
    assert db(classical_restore(y, op, "richardson_lucy", num_iter=100), x) > blurred + 4


@pytest.mark.parametrize("method, floor", [("wiener", 33.0), ("richardson_lucy", 32.0)])
def test_mild_blur_is_inverted_up_to_the_borders(method, floor):
    """A 9x9 std-1 blur is nearly invertible: the result is only this good with the operator's
    reflection at the borders reproduced (scikit-image alone: 17 dB for Wiener)."""
    x = scene(0)
    op = spgd.make_operator("gaussian_blur", kernel_size=9, std=1.0)
    op.kernel = op.kernel.double()
    y = op.A(x)
    restored = classical_restore(y, op, method, num_iter=300)
    assert db(restored, x) > floor  # wiener 34.6, richardson_lucy 33.6 measured
    assert db(restored, x) > db(y, x) + 4


def test_kernel_orientation_and_centre_are_the_operators():
    """An off-centre, one-sided kernel: restored well inside the image, and only with the kernel as applied."""
    x = scene(0)
    kernel = torch.zeros(9, 9, dtype=torch.float64)
    kernel[4, 4:] = 1
    kernel[4:, 6] = 1
    kernel /= kernel.sum()
    y = Blur(kernel).A(x)
    inner = (..., slice(12, -12), slice(12, -12))
    for method, floor in (("wiener", 40.0), ("richardson_lucy", 36.0)):  # 43.2 and 39.7 measured
        assert db(classical_restore(y, Blur(kernel), method, num_iter=100)[inner], x[inner]) > floor
        mirrored = classical_restore(y, Blur(kernel.flip(0, 1)), method, num_iter=100)
        assert db(mirrored[inner], x[inner]) < db(y[inner], x[inner])


def test_tuned_settings_follow_the_noise_level():
    assert wiener_balance(0.01) == pytest.approx(1e-3)
    assert wiener_balance(0.0) == wiener_balance(0.001) > 0  # an 8-bit image's rounding noise at least
    assert [richardson_lucy_iterations(s) for s in (0.0, 0.01, 0.02, 0.05)] == [1000, 800, 283, 72]


def test_wiener_regularises_by_the_noise_level():
    x = scene(2)
    op = spgd.make_operator("gaussian_blur", kernel_size=61, std=3.0, noise_sigma=0.05)
    y = spgd.simulate((x + 1) / 2, op, 0).double()
    assert db(classical_restore(y, op, "wiener"), x) > db(classical_restore(y, op, "wiener", balance=1e-5), x) + 5


@pytest.mark.parametrize("task", ["super_resolution", "inpainting_random", "inpainting_box", "gaussian_blur"])
def test_every_method_gives_images_in_range_of_the_input_size(task):
    x = scene(3, 32).float()
    params = load_task(task)["operator"] | {"noise_sigma": 0.2}  # measurements beyond [-1, 1]
    if task == "gaussian_blur":
        params["kernel_size"] = 15
    op = spgd.make_operator(**params)
    y = spgd.simulate((x + 1) / 2, op, 0)
    assert y.abs().max() > 1
    for method in baseline_methods(op):
        restored = classical_restore(y, op, method, num_iter=10)
        assert restored.shape == x.shape and restored.dtype == y.dtype
        assert restored.min() >= -1 and restored.max() <= 1


def test_methods_per_operator_and_clear_errors_for_the_others():
    assert baseline_methods(spgd.make_operator("super_resolution")) == ["bicubic"]
    assert baseline_methods(spgd.make_operator("inpainting", kind="box")) == ["biharmonic"]
    assert baseline_methods(spgd.make_operator("motion_blur")) == ["wiener", "richardson_lucy"]
    assert baseline_methods(PhaseRetrieval()) == []
    assert set(METHODS) == {"bicubic", "biharmonic", "wiener", "richardson_lucy"}
    y = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="'wiener' does not apply to the super_resolution operator.*bicubic"):
        classical_restore(y, spgd.make_operator("super_resolution"), "wiener")
    with pytest.raises(ValueError, match="'bicubic' does not apply to the phase_retrieval operator.*no classical"):
        classical_restore(y, PhaseRetrieval(), "bicubic")
    with pytest.raises(ValueError, match="unknown classical method 'nearest'"):
        classical_restore(y, spgd.make_operator("super_resolution"), "nearest")
