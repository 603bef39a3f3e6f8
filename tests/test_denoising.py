"""Denoising: the identity operator with Gaussian noise stated in 8-bit levels, and its level estimated from a
measured photo when none is given (Chen et al.'s patch PCA; bench/noise_levels.py measured both estimators)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from skimage import data

import spgd
from spgd.cli import main
from spgd.metrics import psnr
from spgd.operators.noise_level import estimate_noise_level, patch_pca, wavelet_mad
from spgd.priors.gaussian import GaussianPrior
from spgd.samplers import SAMPLERS
from spgd.seeding import make_generators

pytestmark = pytest.mark.usefixtures("one_thread")


def photo() -> torch.Tensor:
    """A 128x128 crop of scikit-image's astronaut (no ../shared needed), 3xHxW in [0, 1]."""
    return torch.from_numpy(data.astronaut()[0:128, 192:320].copy()).permute(2, 0, 1).double() / 255


@pytest.mark.parametrize("sigma", [15, 25, 50])
def test_the_estimators_find_synthetic_noise_within_10_percent(sigma):
    clean = photo()
    noisy = clean + sigma / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(sigma),
                                              dtype=torch.float64)
    assert estimate_noise_level(noisy) == patch_pca(noisy)  # the default, measured better at low levels
    assert abs(patch_pca(noisy) - sigma) / sigma < 0.1
    assert abs(wavelet_mad(noisy) - sigma) / sigma < 0.1
    assert patch_pca(clean) < 2  # a clean photo holds (almost) no noise
    with pytest.raises(ValueError, match="unknown noise estimator 'mad'"):
        estimate_noise_level(noisy, "mad")


def test_the_level_is_8bit_and_the_operator_is_the_identity():
    op = spgd.make_operator("denoising", sigma=25)
    assert op.noise_sigma == pytest.approx(25 / 127.5) and op.supports("svd") and op.supports("pinv")
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.equal(op.A(x), x) and torch.equal(op.A_pinv(x), x) and torch.equal(op.A_adjoint(x), x)
    y = op.measure(x, make_generators([0, 1], 2, "measure"))
    assert float((y - x).std()) == pytest.approx(25 / 127.5, rel=0.1)
    with pytest.raises(ValueError, match="give the noise level to simulate"):
        spgd.make_operator("denoising").measure(x, make_generators([0, 1], 2, "measure"))
    blind = spgd.make_operator("denoising", sigma_range=[0, 50])
    levels = (blind.measure(torch.zeros(4, 3, 32, 32), make_generators([0, 1, 2, 3], 4, "measure"))).flatten(1).std(1)
    assert len(set(levels.tolist())) == 4 and float(levels.max()) < 50 / 127.5 * 1.1  # a level per image


@pytest.mark.parametrize("name", ["ddnm_plus", "ddrm", "pnpdm"])
def test_denoising_matches_the_exact_gaussian_posterior(name):
    """The closed-form case every task has: a Gaussian prior, the exact posterior mean of y = x + n."""
    from .test_samplers import COPIES, EXACT, rms

    prior = GaussianPrior(8, channels=3)
    op = spgd.make_operator("denoising", sigma=0.1 * 127.5)
    x = prior.sample(make_generators(1, 1, "truth"))
    y = op.measure(x, make_generators(0, 1, "measure"))
    mean, std = prior.posterior(op, y)
    out = SAMPLERS[name](prior, op, y.expand(COPIES, *y.shape[1:]).contiguous(), seed=list(range(COPIES)),
                         progress=False, **EXACT[name])
    distance = rms(out.mean(dim=0) - mean.float()[0]) / rms(std.float()[0])
    assert distance < 0.45, distance  # the noisy measurement itself sits at ~1.4, the prior mean further


def test_a_noisy_photo_restores_with_nothing_but_the_file(tmp_path, tiny_prior_path, capsys):
    clean = photo()[:, :64, :64]
    noisy = (clean + 20 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0),
                                            dtype=torch.float64)).clamp(0, 1)
    Image.fromarray((noisy.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(tmp_path / "noisy.png")
    fast = ["-m", str(tiny_prior_path), "--sampler", "ddnm_plus", "--steps", "4", "--threads", "1"]
    assert main(["restore", "-t", "denoising", "-i", str(tmp_path / "noisy.png"), "-o", str(tmp_path / "out"),
                 *fast]) == 0
    assert "noisy.png: estimated from the image: sigma" in capsys.readouterr().err
    entry = json.loads((tmp_path / "out" / "metrics.json").read_text())["images"]["noisy.png"]
    assert 16 < entry["estimated"]["sigma"] < 22  # 20 of 255, clipped to the range as a file holds it
    config = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert config["estimated_from_the_measurement"]["noisy.png"]["sigma"] == entry["estimated"]["sigma"]
    assert "sigma" not in config["operator"]  # the preset's level is for simulating only
    assert main(["restore", "-t", "denoising", "--op", "sigma=30", "-i", str(tmp_path / "noisy.png"), "-o",
                 str(tmp_path / "given"), *fast]) == 0
    given = yaml.safe_load((tmp_path / "given" / "config.yaml").read_text())
    assert given["operator"]["sigma"] == 30 and "estimated_from_the_measurement" not in given
    assert main(["restore", "-t", "denoising", "--simulate", "-i", str(tmp_path / "noisy.png"), "-o",
                 str(tmp_path / "simulated"), *fast]) == 0
    assert yaml.safe_load((tmp_path / "simulated" / "config.yaml").read_text())["operator"]["sigma"] == 25
    assert main(["restore", "-t", "denoising", "-i", str(tmp_path / "noisy.png"), "-o", str(tmp_path / "plain"),
                 "-m", str(tiny_prior_path), "--threads", "1"]) == 0  # no sampler named: the task's own
    plain = yaml.safe_load((tmp_path / "plain" / "config.yaml").read_text())
    assert plain["sampler"] == "ddnm_plus" and plain["sampler_settings"]["steps"] == 20


def test_the_shipped_blind_denoiser_restores_a_noisy_photo_with_nothing_else_given(tmp_path, capsys):
    """`-t denoising` with no model or sampler: the built-in DiffIR denoiser (trained on levels 0-50 drawn per
    crop), blind at any level inside that range; a level outside it is said."""
    clean = photo()[:, :96, :96]
    for sigma, low in ((15, 6.5), (40, 9.8)):
        noisy = (clean + sigma / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(sigma),
                                                   dtype=torch.float64)).clamp(0, 1)
        path = tmp_path / f"noisy{sigma}.png"
        Image.fromarray((noisy.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
        assert main(["restore", "-t", "denoising", "-i", str(path), "-o", str(tmp_path / f"out{sigma}"),
                     "--threads", "1"]) == 0
        restored = spgd.io.load_image(tmp_path / f"out{sigma}" / path.name)[None].double()
        stored = spgd.io.load_image(path)[None].double()
        gain = float(psnr(restored, clean[None]) - psnr(stored, clean[None]))
        assert gain > low, (sigma, gain)  # +7.47 and +10.86 dB with the shipped weights
    err = capsys.readouterr().err
    assert "DiffIR builtin:diffir-natural_denoise" in err and "warning" not in err
    very = (clean + 90 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1),
                                            dtype=torch.float64)).clamp(0, 1)
    Image.fromarray((very.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(tmp_path / "very.png")
    with pytest.warns(UserWarning, match="sigma .* is outside the 0-50 these weights were trained on"):
        assert main(["restore", "-t", "denoising", "-i", str(tmp_path / "very.png"), "-o", str(tmp_path / "very"),
                     "--threads", "1"]) == 0


def test_the_default_method_is_the_first_the_preset_names_that_takes_the_model(tiny_prior_path):
    from spgd.methods import default_method
    from spgd.tasks import preset_methods

    assert preset_methods("denoising") == ["diffir", "ddnm_plus"] and preset_methods("super_resolution") == ["spgd"]
    assert default_method(preset_methods("denoising")) == "diffir"  # the built-in weights
    assert default_method(preset_methods("denoising"), "builtin:diffir-natural_denoise") == "diffir"
    assert default_method(preset_methods("denoising"), tiny_prior_path) == "ddnm_plus"  # a prior: the posterior one
    assert default_method(["spgd"], tiny_prior_path) == "spgd"
    assert default_method(["spgd"], "builtin:diffir-natural_sr4") == "diffir"
