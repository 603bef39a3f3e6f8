"""DiffPIR, DDRM and DPS against DeepInverse's implementations (deepinv on PyPI, BSD-3).

Both sides get the same exact denoiser (the Gaussian prior's), noise levels, operator (random
inpainting, which deepinv has as a decomposable physics), measurement, starting state and random
draws (deepinv's are replaced by ours), on a 1 x 8 x 8 problem. deepinv works on [0, 1] images with
noise levels in those units: its denoiser is D01(u, s) = (D(2u - 1, 2s) + 1) / 2, its measurement
y01 = (y + A 1) / 2 and its noise sigma sigma_y / 2. Where the algorithms are defined identically
the outputs agree to float32 rounding; where they are not, the test feeds deepinv what undoes the
documented difference, and checks that the difference is real.

Needs deepinv, which needs torchvision (a separate environment: see .ci or the samplers' README).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spgd.operators import make_operator
from spgd.priors.gaussian import GaussianPrior
from spgd.samplers import SAMPLERS
from spgd.seeding import StepNoise, make_generators

dinv = pytest.importorskip("deepinv", reason="deepinv is not installed (it needs torchvision; see tests/test_deepinv.py)")

pytestmark = [pytest.mark.deepinv, pytest.mark.usefixtures("one_thread")]

NOISE = 0.1  # sigma_y in [-1, 1] units: deepinv's GaussianNoise(0.05)
SEEDS = [3, 4]


class Denoiser01(torch.nn.Module):
    """The Gaussian prior's exact denoiser in deepinv's convention; records the largest |D| it returned (x0 clamp)."""

    def __init__(self, prior: GaussianPrior) -> None:
        super().__init__()
        self.prior, self.largest = prior, 0.0

    def forward(self, x, sigma, *args, **kwargs):
        sigma = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1)
        out = self.prior.denoise(2 * x.float() - 1, 2 * sigma)
        self.largest = max(self.largest, float(out.detach().abs().max()))
        return (out + 1) / 2


def problem(ladder=None):
    """The prior (pixel std 0.2: its estimates stay inside [-1, 1], so deepinv's clamps never act), our operator,
    deepinv's, the measurement in both conventions."""
    prior = GaussianPrior(8, channels=1, pixel_std=0.2, ladder=ladder)
    op = make_operator("inpainting", kind="random", fraction=0.5, noise_sigma=NOISE)
    x = prior.sample(make_generators(SEEDS, len(SEEDS), "truth"))
    y = op.measure(x[:1], make_generators([0], 1, "measure")).expand(len(SEEDS), -1, -1, -1).contiguous()
    physics = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=op.mask[0].clone(),
                                      noise_model=dinv.physics.GaussianNoise(sigma=NOISE / 2))
    y01 = (y + op.A(torch.ones_like(y))) / 2
    return prior, op, physics, y, y01


def feed(monkeypatch, draws):
    """Make torch.randn_like return `draws` in order (deepinv's DDRM and DiffPIR draw with it)."""
    queue = list(draws)

    def randn_like(t, *args, **kwargs):
        assert queue, "deepinv drew more noise than the sampler compared with"
        out = queue.pop(0)
        assert out.shape == t.shape
        return out.to(dtype=t.dtype)

    monkeypatch.setattr(torch, "randn_like", randn_like)
    return queue


def test_diffpir_equals_deepinvs_with_half_its_lambda(monkeypatch):
    """deepinv's DiffPIR is the released algorithm with these differences, each undone here:
    - its data step is prox_{gamma f} with f = |A u - y|^2 / 2 and gamma = 1 / (2 rho): rho twice the released
      one, so lambda_ = lam / 2;
    - it starts from 2 A^T y01 - 1 + sqrt(sigma_T^2 - sigma_y^2) z (given to ours as x_start);
    - it clamps x0 to [-1, 1] (never active here), and it returns the VP state sqrt(alpha_bar_0) x at the last
      level where ours returns x (a factor 0.99995)."""
    lam, zeta, steps = 7.0, 0.3, 12
    model = dinv.sampling.DiffPIR(Denoiser01(None), dinv.optim.data_fidelity.L2(), max_iter=steps, zeta=zeta,
                                  lambda_=lam / 2)
    ladder = model.reduced_alpha_cumprod.double()  # deepinv's float32 schedule, as the prior's ladder
    prior, op, physics, y, y01 = problem(ladder)
    model.model = denoiser = Denoiser01(prior)
    sigma_top = float(ladder[-1])
    z0 = torch.cat([torch.randn(1, 1, 8, 8, generator=g) for g in make_generators(SEEDS, 2, "start")])
    x_start = 2 * op.A_adjoint(y01) - 1 + math.sqrt(sigma_top ** 2 - NOISE ** 2) * z0
    noise = StepNoise(SEEDS, len(SEEDS), "diffpir", "cpu")
    left = feed(monkeypatch, [z0] + [noise((1, 8, 8)) for _ in range(steps - 1)])
    theirs = 2 * model(y01, physics) - 1
    assert not left and denoiser.largest < 1
    monkeypatch.undo()
    ours = SAMPLERS["diffpir"](prior, op, y, x_start, seed=SEEDS, steps=steps, lam=lam, zeta=zeta, progress=False)
    alpha_bar_0 = float(1 / (1 + ladder[0] ** 2))
    torch.testing.assert_close(theirs, math.sqrt(alpha_bar_0) * ours, rtol=0, atol=2e-5)
    # the difference pinned: with deepinv's own lambda convention (lambda_ = lam) the data step is twice as strong
    feed(monkeypatch, [z0] + [StepNoise(SEEDS, 2, "diffpir", "cpu")((1, 8, 8)) for _ in range(steps - 1)])
    model.lambda_ = lam
    assert (2 * model(y01, physics) - 1 - math.sqrt(alpha_bar_0) * ours).abs().max() > 1e-2


def test_ddrm_equals_deepinvs_once_its_noise_is_scaled_back(monkeypatch):
    """deepinv's DDRM is the released algorithm on a given grid of noise levels, with differences:
    - every noise draw (start and steps) is divided by sqrt(2) (fed sqrt(2) z here, undoing it);
    - its start has mean 0 in [0, 1] units (-1 in ours) on unobserved coordinates (given to ours as x_start);
    - it splits the spectrum once, by s_i > sigma_y (here s = mask: the same split as s_i sigma' vs sigma_y);
    - it calls the denoiser once more at sigma = 0 (the identity for this exact denoiser)."""
    steps, eta, eta_b = 10, 0.85, 1.0
    prior, op, physics, y, y01 = problem()
    sigmas = [float(s) for s in prior.ladder[list(range(0, 1000, 1000 // steps))[::-1]]]
    denoiser = Denoiser01(prior)
    model = dinv.sampling.DDRM(denoiser, sigmas=np.array([s / 2 for s in sigmas] + [0.0]), eta=eta, etab=eta_b)
    z0 = torch.cat([torch.randn(1, 1, 8, 8, generator=g) for g in make_generators(SEEDS, 2, "start")])
    noise = StepNoise(SEEDS, len(SEEDS), "ddrm", "cpu")
    draws = [math.sqrt(2) * z for z in [z0] + [noise((1, 8, 8)) for _ in range(steps)]]
    left = feed(monkeypatch, draws)
    theirs = 2 * model(y01, physics) - 1
    assert not left and denoiser.largest < 1
    monkeypatch.undo()
    # deepinv's start in [0, 1] units: y01 + sqrt(sigma_T^2 - sigma_y^2) z / 2 where observed, sigma_T z / 2 elsewhere
    start01 = torch.where(op.mask > 0, y01 + math.sqrt(sigmas[0] ** 2 - NOISE ** 2) / 2 * z0, sigmas[0] / 2 * z0)
    ours = SAMPLERS["ddrm"](prior, op, y, 2 * start01 - 1, seed=SEEDS, steps=steps, eta=eta, eta_b=eta_b,
                            progress=False)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=2e-5)
    # the difference pinned: deepinv's own draws (z / sqrt(2)) give another result
    feed(monkeypatch, [z / math.sqrt(2) for z in draws])
    assert (2 * model(y01, physics) - 1 - ours).abs().max() > 1e-2


class ScaledDPS(dinv.sampling.DPSDataFidelity if hasattr(dinv.sampling, "DPSDataFidelity") else object):
    """deepinv's DPS data fidelity with its gradient divided by the step's weight c(sigma): see the DPS test."""

    def __init__(self, denoiser, weight, next_sigma):
        super().__init__(denoiser=denoiser, weight=weight, clip=None)
        self.next_sigma = next_sigma

    def grad(self, x, y, physics, sigma, *args, **kwargs):
        s0 = 2 * float(sigma)  # deepinv passes sigma in [0, 1] units
        s1 = self.next_sigma(s0)
        c = 0.5 * (s0 ** 2 - s1 ** 2) / math.sqrt((1 + s0 ** 2) * (1 + s1 ** 2))
        out = super().grad(x, y, physics, sigma, *args, **kwargs)
        return (out[0] / c, out[1]) if isinstance(out, tuple) else out / c


def test_dps_equals_deepinvs_once_its_step_weight_is_divided_out():
    """deepinv's DPS runs the DDPM chain on the continuous VP schedule (here the prior's ladder is exactly those
    levels) and adds its guidance as a score: the step from sigma0 to sigma1 adds
    c * weight * grad ||y - A x0hat|| with c = (s0^2 - s1^2) / (2 sqrt((1 + s0^2)(1 + s1^2))) (VP units), where
    the DPS paper and ours add zeta * grad ||y - A x0hat||. With the guidance off the chains agree; with deepinv's
    gradient divided by c they agree with zeta = weight; undivided they differ."""
    num = 10
    base = dinv.sampling.DPS(Denoiser01(None), num_steps=num + 1)
    times = base.solver.timesteps
    levels = [float(base.sde.sigma_t(t)) for t in times[:-1]]
    prior, op, physics, y, y01 = problem(torch.tensor(levels[::-1], dtype=torch.float64))
    x_T = torch.cat([torch.randn(1, 1, 8, 8, generator=g) for g in make_generators(SEEDS, 2, "start")])

    def next_sigma(s0):
        k = min(range(len(levels)), key=lambda i: abs(levels[i] - s0))
        return levels[k + 1] if k + 1 < len(levels) else 0.0

    def deepinv_dps(weight, scaled):
        denoiser = Denoiser01(prior)
        model = dinv.sampling.DPS(denoiser, num_steps=num + 1, weight=weight)
        if scaled:
            model.data_fidelity = ScaledDPS(denoiser, weight, next_sigma)
        noise = StepNoise(SEEDS, len(SEEDS), "dps", "cpu")
        queue = [noise((1, 8, 8)).double() for _ in range(num - 1)]
        model.solver.randn_like = lambda t, *a, **k: queue.pop(0).to(t.dtype)
        out = 2 * model(y01, physics, x_init=x_T.double()) - 1
        assert not queue and denoiser.largest < 1
        return out.float()

    def ours(zeta):
        return SAMPLERS["dps"](prior, op, y, x_T, seed=SEEDS, steps=num, zeta=zeta, clip_denoised=False,
                               progress=False)

    torch.testing.assert_close(deepinv_dps(0.0, False), ours(0.0), rtol=0, atol=2e-5)
    torch.testing.assert_close(deepinv_dps(0.3, True), ours(0.3), rtol=0, atol=2e-5)
    assert (deepinv_dps(0.3, False) - ours(0.3)).abs().max() > 1e-2
