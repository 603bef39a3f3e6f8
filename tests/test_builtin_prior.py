"""The shipped face prior: it loads by default, denoises faces, carries the documented recommended
settings, and the README's first command runs with it (a few steps here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import spgd
from spgd.cli import main
from spgd.demo import astronaut_face
from spgd.metrics import psnr
from spgd.priors import builtin_priors

RECOMMENDED_YAML = Path(__file__).parents[1] / "src" / "spgd" / "priors" / "builtin" / "faces64.recommended.yaml"


@pytest.fixture(scope="module")
def prior():
    return spgd.load_prior()


@pytest.fixture(scope="module")
def face() -> torch.Tensor:
    image = np.array(astronaut_face().resize((64, 64), Image.LANCZOS))
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def test_the_default_prior_is_the_shipped_64x64_face_prior(prior):
    assert "builtin:faces64" in builtin_priors()
    assert builtin_priors()["builtin:faces64"].stat().st_size < 4 * 2 ** 20
    assert (prior.image_channels, prior.image_size) == (3, 64)
    assert "EDM" in prior.description


def test_it_denoises_a_face_it_never_saw(prior, face):
    generator = torch.Generator().manual_seed(0)
    x0 = face * 2 - 1
    noisy = x0 + 0.5 * torch.randn(x0.shape, generator=generator)
    with torch.no_grad():
        denoised = prior.denoise(noisy, 0.5)
    assert float(psnr((noisy + 1) / 2, face)) < 13
    assert float(psnr(((denoised + 1) / 2).clamp(0, 1), face)) > 22


def test_it_carries_exactly_the_recommended_settings_of_the_repository(prior):
    documented = yaml.safe_load(RECOMMENDED_YAML.read_text())
    assert prior.recommendations == documented
    assert prior.recommended("super_resolution", "spgd") == {**documented["samplers"]["spgd"],
                                                             **documented["tasks"]["super_resolution"]["spgd"]}


def test_restore_without_a_prior_uses_it(prior, face):
    op = spgd.make_operator("super_resolution", scale=4, noise_sigma=0.01)
    y = spgd.simulate(face, op, seed=0)
    settings = {"steps": 3, "inner_steps": 1, "sigma_max": 10.0, "lr": 15.0}
    assert torch.equal(spgd.restore(y, op, seed=0, **settings), spgd.restore(y, op, prior, seed=0, **settings))


def test_the_readme_demo_command_writes_its_results_with_the_prior_settings(tmp_path):
    out = tmp_path / "demo"
    assert main(["restore", "-t", "super_resolution", "--simulate", "-i", "demo:astronaut", "--resize",
                 "-o", str(out), "--steps", "2", "--threads", "1"]) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"] == "builtin:faces64"
    assert config["recommended_by_the_prior"]["lr"] == 15.0
    assert config["sampler_settings"]["steps"] == 2 and config["sampler_settings"]["sigma_max"] == 10.0
    assert config["sampler_settings"]["mean_of"] == 4  # the prior's estimator: the mean of 4 runs
    assert (out / "grid.png").is_file() and (out / "metrics.json").is_file()
