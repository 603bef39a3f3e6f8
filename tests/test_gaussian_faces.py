"""The low-rank Gaussian face prior: fitted principal components, a closed-form denoiser and the exact
posterior mean (conjugate gradients), checked against dense linear algebra on small images."""
from __future__ import annotations

import pytest
import torch

import spgd
from spgd.priors.gaussian import LowRankGaussian
from spgd.seeding import make_generators

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def prior():
    g = torch.Generator().manual_seed(0)
    low = torch.rand(400, 3, 2, 2, generator=g) * 2 - 1  # smooth random images: a few strong components
    images = torch.nn.functional.interpolate(low, size=(6, 6), mode="bilinear", align_corners=False)
    images = images + 0.05 * torch.randn(images.shape, generator=g)
    return LowRankGaussian.fit(images, components=20)


def dense(prior: LowRankGaussian) -> torch.Tensor:
    basis = prior.basis.double()
    return basis @ torch.diag(prior.variances.double()) @ basis.T + prior.delta * torch.eye(basis.shape[0],
                                                                                              dtype=torch.float64)


def test_fit_finds_orthonormal_components_and_the_leftover_variance(prior):
    torch.testing.assert_close(prior.basis.T @ prior.basis, torch.eye(20), atol=1e-4, rtol=0)
    assert (prior.variances[:-1] >= prior.variances[1:]).all() and prior.delta < prior.variances[-1]
    assert prior.delta > 0


def test_denoiser_is_the_closed_form_conditional_mean(prior):
    sigma_cov = dense(prior)
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for sigma in (0.05, 0.5, 3.0):
        want = prior.mean.double() + (sigma_cov @ torch.linalg.solve(
            sigma_cov + sigma ** 2 * torch.eye(len(sigma_cov), dtype=torch.float64),
            (x.flatten(1) - prior.mean.double()).T)).T
        torch.testing.assert_close(prior.denoise(x, sigma).flatten(1), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("task", [dict(name="super_resolution", scale=2, noise_sigma=0.05),
                                  dict(name="inpainting", kind="random", fraction=0.7, noise_sigma=0.02),
                                  dict(name="gaussian_blur", kernel_size=3, std=1.0, noise_sigma=0.05)])
def test_posterior_mean_solves_the_gaussian_linear_model_exactly(prior, task):
    op = spgd.make_operator(**task)
    x = prior.sample(make_generators([1, 2], 2, "truth"))
    y = op.measure(x, make_generators([1, 2], 2, "measure"))
    got = prior.posterior_mean(y, op)
    sigma_cov = dense(prior)
    d = sigma_cov.shape[0]
    for i in range(2):
        single = spgd.make_operator(**{**task, **({"mask": op.mask[i:i + 1]} if "mask" in op.params() and
                                                   op.mask is not None else {})})
        a = torch.stack([single.A(torch.eye(d, dtype=torch.float64)[j].reshape(1, 3, 6, 6)).flatten()
                         for j in range(d)], dim=1)
        k = a @ sigma_cov @ a.T + max(op.noise_sigma, 1e-3) ** 2 * torch.eye(a.shape[0], dtype=torch.float64)
        want = prior.mean.double() + sigma_cov @ a.T @ torch.linalg.solve(k, y[i].double().flatten()
                                                                         - a @ prior.mean.double())
        torch.testing.assert_close(got[i].double().flatten(), want, rtol=1e-4, atol=1e-4)
