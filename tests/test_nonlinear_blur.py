"""Non-linear blur: strict loading of KernelWizard weights, clear errors, reproducible measurements.

A randomly initialised KernelWizard stands in for the released GOPRO_wVAE.pth (same keys and shapes).
The network needs image sizes that are multiples of 128, so the images here are 128 x 128; one such
forward pass costs about a second on two CPU cores, so the end-to-end test runs only six of them.
"""
import pytest
import torch

from spgd.operators.nonlinear_blur import KernelWizard, NonlinearBlur

SIZE = 128


@pytest.fixture(scope="module")
def weights(kernel_wizard_weights):
    return kernel_wizard_weights


@pytest.fixture(scope="module")
def operator(weights):
    return NonlinearBlur(weights, noise_sigma=0.05)


def _images(batch: int) -> torch.Tensor:
    return torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _generators(seeds):
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def test_network_is_frozen_and_in_eval_mode(operator):
    assert not any(p.requires_grad for p in operator.network.parameters())
    assert not operator.network.training
    assert not operator.linear
    with pytest.raises(NotImplementedError, match="nonlinear_blur is not linear"):
        operator.A_adjoint(_images(1))


def test_measure_is_finite_and_reproducible_batch_of_three_equals_three_of_one(operator):
    x = _images(3)
    operator.update(kernel_latent=None)
    batch = operator.measure(x, _generators([10, 11, 12]))
    latents = operator.kernel_latent
    assert batch.shape == x.shape and torch.isfinite(batch).all()
    assert latents.shape == (3, 512, SIZE // 128, SIZE // 128)
    for i, seed in enumerate([10, 11, 12]):
        operator.update(kernel_latent=None)
        single = operator.measure(x[i : i + 1], _generators([seed]))
        assert torch.equal(operator.kernel_latent[0], latents[i])
        torch.testing.assert_close(single[0], batch[i], rtol=1e-4, atol=1e-4)
    assert not torch.equal(latents[0], latents[1])
    params = operator.params()
    assert params["weights"].endswith("GOPRO_wVAE.pth")
    assert params["kernel_latent"] is operator.kernel_latent


def test_gradient_reaches_the_image(operator):
    operator.update(kernel_latent=torch.randn(1, 512, 1, 1, generator=torch.Generator().manual_seed(0)))
    x = (_images(1) * 0.5).requires_grad_(True)
    operator.A(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_image_size_must_be_a_multiple_of_128(operator):
    operator.update(kernel_latent=None)
    with pytest.raises(ValueError, match="multiples of 128"):
        operator.measure(torch.zeros(1, 3, 64, 64), _generators([0]))


def test_missing_weights_name_the_file_and_where_to_get_it(tmp_path):
    path = tmp_path / "nowhere" / "GOPRO_wVAE.pth"
    with pytest.raises(FileNotFoundError, match="GOPRO_wVAE.pth") as error:
        NonlinearBlur(path)
    assert str(path) in str(error.value)
    assert "blur-kernel-space-exploring" in str(error.value)


def _renamed_keys_state(renames: dict[str, str]) -> dict[str, torch.Tensor]:
    """The checkpoint's key names with one-element tensors (enough to reach the key check cheaply)."""
    with torch.device("meta"):
        keys = list(KernelWizard().state_dict())
    return {renames.get(key, key): torch.zeros(1) for key in keys}


def test_wrong_key_is_reported(tmp_path):
    path = tmp_path / "renamed.pth"
    torch.save(_renamed_keys_state({"adapter.model.down.0.weight": "adapter.model.down.0.kernel"}), path)
    with pytest.raises(ValueError, match="missing keys") as error:
        NonlinearBlur(path)
    message = str(error.value)
    assert "adapter.model.down.0.weight" in message and "adapter.model.down.0.kernel" in message


def test_wrong_shapes_are_reported(tmp_path):
    path = tmp_path / "shapes.pth"
    torch.save(_renamed_keys_state({}), path)
    with pytest.raises(ValueError, match="size mismatch"):
        NonlinearBlur(path)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match="not a state dict"):
        NonlinearBlur(path)
