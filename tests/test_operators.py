"""Operators: golden values of the published code, exact adjoints, reproducible per-image draws."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from spgd.operators import (
    Blur,
    GaussianBlur,
    HighDynamicRange,
    Inpainting,
    MotionBlur,
    PhaseRetrieval,
    SuperResolution,
    gaussian_kernel,
    load_mask,
    make_operator,
    operator_names,
)

from .conftest import REFERENCE, need

TOL = 1e-5


@pytest.fixture(scope="module")
def cases() -> dict:
    return torch.load(need(REFERENCE / "spgd_cases.pt"), weights_only=False)["cases"]


def generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


# --- golden values ---------------------------------------------------------------------------

GOLDEN = {
    "down_sampling": lambda c: SuperResolution(scale=c["operator"]["scale_factor"]),
    "gaussian_blur": lambda c: Blur(c["kernel"]),
    "motion_blur": lambda c: Blur(c["kernel"]),
    "inpainting_random": lambda c: Inpainting(mask=c["mask"]),
    "phase_retrieval": lambda c: PhaseRetrieval(oversample=c["operator"]["oversample"]),
    "hdr": lambda c: HighDynamicRange(scale=c["operator"]["scale"]),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_forward(cases, name):
    case = cases[name]
    op = GOLDEN[name](case)
    assert max_err(op.A(case["x_gt"]), case["A_x_gt"]) < TOL


def test_golden_gaussian_kernel(cases):
    case = cases["gaussian_blur"]
    size, std = case["operator"]["kernel_size"], case["operator"]["intensity"]
    assert max_err(gaussian_kernel(size, std), case["kernel"]) < 1e-7
    op = GaussianBlur(kernel_size=size, std=std)
    assert max_err(op.A(case["x_gt"]), case["A_x_gt"]) < TOL


def test_golden_motion_blur_through_operator(cases):
    case = cases["motion_blur"]
    op = MotionBlur(kernel_size=61, intensity=0.5, kernel=case["kernel"])
    assert max_err(op.measure(case["x_gt"]), case["A_x_gt"]) < TOL  # given kernel: nothing drawn


# --- adjoints ----------------------------------------------------------------------------------


def assert_adjoint(op, shape, seed=0):
    """<A x, y> == <x, A^T y> in float64, after drawing any random parameters."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    op.draw(x, generators(*range(shape[0])))
    ax = op.A(x)
    y = torch.randn(ax.shape, generator=g, dtype=torch.float64)
    lhs, rhs = (ax * y).sum(), (x * op.A_adjoint(y)).sum()
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (2, 3, 24, 40)])
def test_super_resolution_adjoint(shape):
    assert_adjoint(SuperResolution(scale=4), shape)


@pytest.mark.parametrize("kind", ["random", "box"])
def test_inpainting_adjoint(kind):
    assert_adjoint(Inpainting(kind=kind), (3, 3, 32, 24))


def test_gaussian_blur_adjoint():
    assert_adjoint(GaussianBlur(kernel_size=9, std=3.0), (2, 3, 20, 28))


def test_motion_blur_adjoint_per_image_kernels():
    op = MotionBlur(kernel_size=15, intensity=0.5)
    assert_adjoint(op, (3, 3, 24, 20))
    assert op.kernel.shape == (3, 15, 15)
    assert not torch.equal(op.kernel[0], op.kernel[1])


def test_super_resolution_pinv_and_identity():
    op = SuperResolution(scale=4)
    y = torch.randn(2, 3, 6, 10, dtype=torch.float64)
    assert max_err(op.A(op.A_pinv(y)), y) < 1e-10
    x = torch.randn(1, 3, 8, 12)
    assert torch.equal(SuperResolution(scale=1).A(x), x)


def _matlab_imresize_matrix(n: int, scale: int) -> torch.Tensor:
    """MATLAB imresize's bicubic downscaling by 1/scale of a length-n axis (antialiased), as a matrix,
    written after the steps of its `contributions`: 1-based, one output pixel at a time."""
    width = 4.0 * scale  # the cubic's width 4, widened by the scale factor
    taps = int(np.ceil(width)) + 2
    mirrored = list(range(n)) + list(range(n - 1, -1, -1))  # MATLAB's aux = [1:n, n:-1:1]
    matrix = torch.zeros(n // scale, n, dtype=torch.float64)
    for out in range(1, n // scale + 1):
        u = out * scale + 0.5 * (1 - scale)
        left = int(np.floor(u - width / 2))
        weights = [_keys_cubic((u - (left + j)) / scale) / scale for j in range(taps)]
        for j, weight in enumerate(weights):
            matrix[out - 1, mirrored[(left + j - 1) % (2 * n)]] += weight / sum(weights)
    return matrix


def _keys_cubic(t: float) -> float:
    t = abs(t)
    return (1.5 * t**3 - 2.5 * t**2 + 1 if t <= 1 else -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2 if t <= 2 else 0.0)


@pytest.mark.parametrize("n, scale", [(16, 2), (24, 3), (32, 4), (64, 8)])
def test_super_resolution_is_matlab_imresize_bicubic(n, scale):
    rows, cols = _matlab_imresize_matrix(n, scale), _matlab_imresize_matrix(n // 2, scale)
    x = torch.rand(1, 1, n, n // 2, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    assert max_err(SuperResolution(scale=scale).A(x), rows @ x @ cols.T) < 1e-12
    if scale == 2:  # an inner row by hand: cubic(d / 2) at d = 0.5, 1.5, 2.5, 3.5 either side, summing to 2
        half = [-0.0234375, -0.0703125, 0.2265625, 0.8671875]
        assert rows[4, 5:13].tolist() == pytest.approx([w / 2 for w in half + half[::-1]], abs=1e-15)


# --- per-image draws -------------------------------------------------------------------------

BATCHED = {
    "inpainting_random": lambda: Inpainting(kind="random", noise_sigma=0.05),
    "inpainting_box": lambda: Inpainting(kind="box", noise_sigma=0.05),
    "motion_blur": lambda: MotionBlur(kernel_size=15, intensity=0.5, noise_sigma=0.05),
}


@pytest.mark.parametrize("name", sorted(BATCHED))
def test_measure_batch_invariance(name):
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    seeds = (11, 22, 33)
    batched = BATCHED[name]().measure(x, generators(*seeds))
    singles = [BATCHED[name]().measure(x[i : i + 1], generators(s)) for i, s in enumerate(seeds)]
    assert torch.equal(batched, torch.cat(singles))
    assert not torch.equal(batched[0], batched[1])


def test_drawn_parameters_are_kept():
    op = Inpainting(kind="random")
    x = torch.zeros(2, 3, 16, 16)
    op.measure(x, generators(1, 2))
    mask = op.mask.clone()
    op.measure(x, generators(3, 4))
    assert torch.equal(op.mask, mask)
    op.update(mask=None).measure(x, generators(3, 4))
    assert not torch.equal(op.mask, mask)


def test_random_mask_fraction():
    op = Inpainting(kind="random")
    op.draw(torch.zeros(4, 3, 64, 64), generators(0, 1, 2, 3))
    assert op.mask.shape == (4, 1, 64, 64)
    removed = 1 - op.mask.mean(dim=(1, 2, 3))
    assert torch.allclose(removed, torch.full((4,), int(0.8 * 64 * 64) / 64**2))
    ranged = Inpainting(kind="random", fraction=(0.3, 0.6))
    ranged.draw(torch.zeros(8, 3, 32, 32), generators(*range(8)))
    removed = 1 - ranged.mask.mean(dim=(1, 2, 3))
    assert ((removed > 0.29) & (removed < 0.61)).all()


def test_box_mask_inside_margin():
    height, width = 64, 48
    op = Inpainting(kind="box")  # defaults: sides half the image, margin 1/8
    op.draw(torch.zeros(6, 3, height, width), generators(*range(6)))
    for mask in op.mask[:, 0]:
        rows = (mask == 0).any(dim=1).nonzero().flatten()
        cols = (mask == 0).any(dim=0).nonzero().flatten()
        assert len(rows) == height // 2 and len(cols) == width // 2
        assert rows.min() >= height // 8 and rows.max() < height - height // 8
        assert cols.min() >= width // 8 and cols.max() < width - width // 8
        assert (1 - mask).sum() == len(rows) * len(cols)  # one rectangle
    sized = Inpainting(kind="box", box_size=(4, 10), margin=3)
    sized.draw(torch.zeros(5, 1, 20, 20), generators(*range(5)))
    removed = (sized.mask[:, 0] == 0).any(dim=2).sum(dim=1)
    assert ((removed >= 4) & (removed <= 10)).all()
    with pytest.raises(ValueError, match="does not fit"):
        Inpainting(kind="box", box_size=16, margin=4).draw(torch.zeros(1, 3, 20, 20), generators(0))


# --- masks from files ------------------------------------------------------------------------


def test_load_mask(tmp_path):
    pixels = np.zeros((8, 12), dtype=np.uint8)
    pixels[:, :6] = 255
    pixels[0, 0] = 120  # below the 0.5 threshold
    Image.fromarray(pixels).convert("RGB").save(tmp_path / "mask.png")
    mask = load_mask(tmp_path / "mask.png", (8, 12))
    assert mask.shape == (1, 1, 8, 12) and mask.dtype == torch.float32
    assert mask.sum() == 8 * 6 - 1 and mask[0, 0, 0, 0] == 0
    x = torch.randn(2, 3, 8, 12)
    assert torch.equal(Inpainting(mask=mask).A_pinv(x), x * mask)


def test_load_mask_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_mask(tmp_path / "missing.png")
    (tmp_path / "broken.png").write_text("not an image")
    with pytest.raises(ValueError, match="broken.png"):
        load_mask(tmp_path / "broken.png")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match=r"small.png is 8x8 pixels \(WxH\), expected 16x16"):
        load_mask(tmp_path / "small.png", 16)


# --- errors ------------------------------------------------------------------------------------


def test_operator_errors():
    with pytest.raises(ValueError, match=r"30x40 is not divisible by the scale 4"):
        SuperResolution(scale=4).A(torch.zeros(1, 3, 30, 40))
    with pytest.raises(ValueError, match="odd"):
        Blur(torch.ones(4, 4) / 16)
    with pytest.raises(ValueError, match="mask or a kind"):
        Inpainting()
    with pytest.raises(ValueError, match="does not fit"):
        Inpainting(mask=torch.ones(1, 1, 8, 8)).A(torch.zeros(1, 3, 16, 16))


# --- registry ----------------------------------------------------------------------------------


def test_make_operator_round_trip():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    built = [
        make_operator("down_sampling", scale=4, noise_sigma=0.01),
        make_operator("inpainting", kind="box", noise_sigma=0.01),
        make_operator("inpainting", kind="random", fraction=(0.5, 0.9)),
        make_operator("gaussian_blur", kernel_size=9, std=2.0),
        make_operator("motion_blur", kernel_size=15, intensity=0.3),
        make_operator("phase_retrieval", oversample=1.0),
        make_operator("high_dynamic_range", scale=3),
        make_operator("blur", kernel=torch.ones(2, 3, 3) / 9),
    ]
    for op in built:
        op.measure(x, generators(5, 6))
        params = op.params()
        rebuilt = make_operator(**params)
        assert type(rebuilt) is type(op)
        for key, value in rebuilt.params().items():
            assert torch.equal(value, params[key]) if torch.is_tensor(value) else value == params[key]
        assert torch.equal(rebuilt.A(x), op.A(x))


def test_make_operator_errors():
    assert {"super_resolution", "down_sampling", "hdr", "nonlinear_blur"} <= set(operator_names())
    with pytest.raises(ValueError, match="known operators: .*super_resolution"):
        make_operator("deblur_everything")
    with pytest.raises(ValueError, match="'scale_factor'"):
        make_operator("super_resolution", scale_factor=4)


def test_inpainting_rejects_impossible_draw_settings():
    with pytest.raises(ValueError, match="fraction must lie in"):
        make_operator("inpainting", kind="random", fraction=1.5)
    with pytest.raises(ValueError, match="min <= max"):
        make_operator("inpainting", kind="box", box_size=(20, 10))
