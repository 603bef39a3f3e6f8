"""The shipped natural-image patch prior: small, denoises a natural crop it never saw (scikit-image's coffee
is in neither T91 nor BSD200), carries the repository's recommended settings, and is the prior a photo of
any size but 64x64 gets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from skimage import data

import spgd
from spgd.metrics import psnr
from spgd.methods import builtin_model
from spgd.priors import builtin_priors

RECOMMENDED_YAML = Path(__file__).parents[1] / "src" / "spgd" / "priors" / "builtin" / "natural.recommended.yaml"


@pytest.fixture(scope="module")
def prior():
    return spgd.load_prior("builtin:natural")


def coffee_crop() -> torch.Tensor:
    image = data.coffee()[100:164, 300:364]  # 64x64 of the cup's rim and the saucer
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255


def test_it_ships_small_and_is_a_64x64_edm_patch_prior(prior):
    assert builtin_priors()["builtin:natural"].stat().st_size < 4 * 2 ** 20
    assert (prior.image_channels, prior.image_size) == (3, 64) and "EDM" in prior.description


def test_it_denoises_a_natural_crop_it_never_saw(prior):
    clean = coffee_crop()
    x0 = clean * 2 - 1
    noisy = x0 + 0.2 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        denoised = prior.denoise(noisy, 0.2)
    assert float(psnr(((noisy + 1) / 2).clamp(0, 1), clean)) < 21
    assert float(psnr(((denoised + 1) / 2).clamp(0, 1), clean)) > 30  # 32.0 dB with the shipped weights (step 3,250)


def test_it_carries_exactly_the_recommended_settings_of_the_repository(prior):
    documented = yaml.safe_load(RECOMMENDED_YAML.read_text())
    assert prior.recommendations == documented
    assert prior.recommended("super_resolution", "ddnm") == documented["samplers"]["ddnm"]


def test_a_photo_gets_it_and_a_64x64_face_the_face_prior():
    assert builtin_model("spgd", "super_resolution", spgd.make_operator("super_resolution", scale=4), (400, 600)).name == "builtin:natural"
    assert builtin_model("spgd", "super_resolution", spgd.make_operator("super_resolution", scale=4), (64, 64)).name == "builtin:faces64"


@pytest.mark.parametrize("task, floor", [("super_resolution", 24.0), ("inpainting_random", 24.0), ("gaussian_blur", 22.0)])
def test_its_recommended_spgd_settings_restore_each_task_without_diverging(prior, task, floor):
    """The settings the file carries for a task (one run), on the coffee crop: no divergence, a usable result.
    (SR's lr 15 once applied to every task and made inpainting and deblurring diverge.)"""
    from spgd.run import make_spec, restore_batch

    spec = make_spec(prior, task, "spgd", settings={"mean_of": 1})
    result = restore_batch(spec, [0], clean=coffee_crop(), progress=False)
    assert result.failed_steps == [None]
    assert float(psnr(result.restored, coffee_crop())) > floor
