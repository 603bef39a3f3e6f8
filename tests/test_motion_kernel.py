"""Motion-blur kernels: valid (finite, non-negative, sum 1) at every size, reproducible per seed."""
import pytest
import torch

from spgd.operators.motion_kernel import motion_kernel


def _kernel(size: int, intensity: float, seed: int) -> torch.Tensor:
    return motion_kernel(size, intensity, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [1, 5, 9, 15, 31, 61])
def test_shape_sum_and_sign(size):
    kernel = _kernel(size, 0.5, 0)
    assert kernel.shape == (size, size) and kernel.dtype == torch.float32
    assert kernel.min() >= 0
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("size", [5, 9, 61])
@pytest.mark.parametrize("intensity", [0.0, 0.5, 1.0])
def test_many_draws_are_finite_and_normalised(size, intensity):
    kernels = torch.stack([_kernel(size, intensity, seed) for seed in range(200)])
    assert torch.isfinite(kernels).all()
    assert (kernels >= 0).all()
    sums = kernels.sum(dim=(1, 2))
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    assert (kernels.amax(dim=(1, 2)) > 0).all()


def test_deterministic_per_seed_and_seeds_differ():
    assert torch.equal(_kernel(31, 0.5, 7), _kernel(31, 0.5, 7))
    assert not torch.equal(_kernel(31, 0.5, 7), _kernel(31, 0.5, 8))


def test_kernel_is_centred_on_average():
    """The trajectory's centre sits at the kernel's central pixel, so blurring does not shift images."""
    size = 31
    kernels = torch.stack([_kernel(size, 0.5, seed) for seed in range(100)]).double()
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    mean_row = (kernels.sum(dim=2) * coords).sum(dim=1).mean()
    mean_col = (kernels.sum(dim=1) * coords).sum(dim=1).mean()
    assert abs(mean_row) < 1.0 and abs(mean_col) < 1.0


def test_higher_intensity_spreads_more():
    def mean_support(intensity: float) -> float:
        kernels = torch.stack([_kernel(31, intensity, seed) for seed in range(100)])
        return (kernels > 1e-3).sum(dim=(1, 2)).double().mean().item()

    assert mean_support(0.9) > 1.1 * mean_support(0.1)


def test_zero_intensity_is_a_straight_line():
    """Intensity 0 draws linear motion: long kernels are thin (about a pixel) across their main axis."""
    size = 61
    coords = torch.arange(size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    points = torch.stack([rows.flatten(), cols.flatten()], dim=1)
    long_ones = 0
    for seed in range(20):
        weights = _kernel(size, 0.0, seed).double().flatten()
        centred = points - weights @ points
        covariance = (centred * weights[:, None]).T @ centred
        minor, major = torch.linalg.eigvalsh(covariance).sqrt()
        if major > 3:
            long_ones += 1
            assert minor < 0.8
    assert long_ones >= 10


@pytest.mark.parametrize("size, intensity, message", [
    (0, 0.5, "size"), (2.5, 0.5, "size"), (9, -0.1, "intensity"), (9, 1.5, "intensity")])
def test_rejects_bad_arguments(size, intensity, message):
    with pytest.raises(ValueError, match=message):
        motion_kernel(size, intensity)
