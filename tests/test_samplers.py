"""Every sampler against the exact Gaussian posterior, on the tiny ADM, and via the CLI.

The exact tests use `GaussianPrior`: with a Gaussian prior and a linear operator with Gaussian noise
the posterior is Gaussian and known in closed form, so a sampler's output over many seeds can be
compared with the true posterior mean and standard deviation instead of with pictures. Distances
are in units of the posterior standard deviation: d = rms(mean of outputs - posterior mean) /
rms(posterior std), spread = rms(std of outputs) / rms(posterior std).
"""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from spgd.cli import main
from spgd.operators import make_operator
from spgd.operators.blur import transfer_function
from spgd.priors.gaussian import GaussianPrior
from spgd.samplers import SAMPLERS, DivergenceError, Trace, sampler_settings
from spgd.samplers.daps import DAPS_1K
from spgd.seeding import make_generators
from spgd.run import make_spec
from spgd.tasks import load_task, preset_settings, task_names

from .conftest import write_face_like

NOISE = 0.1  # measurement noise std of the exact problems
COPIES = 64  # seeds per exact problem: the Monte-Carlo error of a mean is ~ 1/sqrt(64) = 0.125 posterior stds

# Settings for the exact problems (8x8 images): the published algorithms with fewer steps. DAPS's
# tau is the true noise std (its likelihood is exp(-|A x - y|^2 / (2 tau^2))); its lr is raised
# from the published 1e-4 so 50 Langevin steps mix at this image scale (lr/tau^2 = 0.3 per step).
EXACT = {
    "dps": dict(steps=250, zeta=0.3, clip_denoised=False),  # the prior's images are not confined to [-1, 1]
    "daps": dict(steps=50, ode_steps=5, langevin_steps=50, lr=3e-3, tau=NOISE),
    "reddiff": dict(steps=250),
    "deqir": dict(steps=50),
    "spgd": dict(steps=100, inner_steps=5, lr=0.5),
    # the published algorithms with their defaults, DDRM with 100 steps instead of 20 (below), PnP-DM annealed
    # to rho_min = 0.02 (its split-Gibbs target is the posterior of y ~ N(A x, sigma_y^2 + rho^2 A A^T): exact
    # only as rho -> 0; the published 0.3 is three times this problem's noise) and returning its last sample
    "diffpir": dict(steps=100),
    "ddnm": dict(steps=100),
    "ddnm_plus": dict(steps=100),
    "ddrm": dict(steps=100),
    "pigdm": dict(steps=100),
    "pnpdm": dict(steps=100, rho_min=0.02, samples=1),
    "fast_em": dict(steps=100, refit_every=0),  # the operator known: its E-step loop alone (DiffPIR + CG)
}
# Tiny settings for the behaviour tests (determinism, NaN handling) on the Gaussian prior: they test
# the samplers' own seeding and per-image bookkeeping (the ADM's batch independence is tested with SPGD).
FAST = {
    "dps": dict(steps=8),
    "daps": dict(steps=4, ode_steps=2, langevin_steps=3, lr=1e-3, tau=0.05),
    "reddiff": dict(steps=8),
    "deqir": dict(steps=5, max_iter=5),
    "spgd": dict(steps=4, inner_steps=2, lr=0.5),
    "diffpir": dict(steps=5),
    "ddnm": dict(steps=5, travel_length=2, travel_repeat=2),
    "ddnm_plus": dict(steps=5, travel_length=2, travel_repeat=2),
    "ddrm": dict(steps=5),
    "pigdm": dict(steps=5, eta=0.5),
    "pnpdm": dict(steps=4, diffusion_steps=5, burn_in=1, samples=2),
    "fast_em": dict(steps=5, refit_every=0),
}
# Tiny settings for the 64x64 ADM: a few network evaluations each (0.05..1 s each on 2 busy CPU cores).
ADM = {
    "dps": dict(steps=2),
    "daps": dict(steps=2, ode_steps=1, langevin_steps=2),
    "reddiff": dict(steps=2),
    "deqir": dict(steps=2, max_iter=3),
    "spgd": dict(steps=2, inner_steps=1, sigma_max=5.0),
    "diffpir": dict(steps=3),
    "ddnm": dict(steps=2),
    "ddnm_plus": dict(steps=2),
    "ddrm": dict(steps=2),
    "pigdm": dict(steps=2),
    "pnpdm": dict(steps=1, diffusion_steps=2, burn_in=0, samples=1),
    "fast_em": dict(steps=3, refit_every=0),
}


def rms(t: torch.Tensor) -> float:
    return float(t.double().pow(2).mean().sqrt())


@pytest.fixture(scope="module", params=["inpainting", "super_resolution"])
def exact_problem(request):
    """One measured image, COPIES copies of its measurement, and the exact posterior."""
    if request.param == "inpainting":  # 1 channel, half the pixels observed
        prior = GaussianPrior(8, channels=1)
        op = make_operator("inpainting", kind="random", fraction=0.5, noise_sigma=NOISE)
    else:  # 3 channels, 2x antialiased bicubic downsampling
        prior = GaussianPrior(8, channels=3)
        op = make_operator("super_resolution", scale=2, noise_sigma=NOISE)
    x = prior.sample(make_generators(1, 1, "truth"))
    y = op.measure(x, make_generators(0, 1, "measure"))
    mean, std = prior.posterior(op, y)
    return dict(name=request.param, prior=prior, op=op, y=y.expand(COPIES, *y.shape[1:]).contiguous(),
                mean=mean.float()[0], std=std.float()[0], pinv=(prior.mean + op.A_pinv(y - op.A(prior.mean[None]))),
                outputs={})


def exact_output(p: dict, name: str) -> torch.Tensor:
    """The COPIES outputs of sampler `name` on the exact problem `p` (computed once per module)."""
    if name not in p["outputs"]:
        p["outputs"][name] = SAMPLERS[name](p["prior"], p["op"], p["y"], seed=list(range(COPIES)), progress=False,
                                            **EXACT[name])
    return p["outputs"][name]


# Bounds on d (posterior-mean distance, posterior-std units). An exact sampler would sit at ~0.125,
# the Monte-Carlo error of 64 draws; none of these methods is exact. Measured on these problems
# (inpainting / SR): DPS 0.26 / 0.11, DAPS 0.56 / 0.22, RED-diff 0.33 / 0.40, DeqIR 0.24 / 0.17 (noise-free chain
# 0.31 / 0.40),
# SPGD 0.31 / 0.21, DiffPIR 0.54 / 0.15, DDNM 0.30 / 0.39, DDNM+ 0.47 / 0.10, DDRM 0.42 / 0.09 (20
# steps: 0.83 / 0.16), PiGDM 0.31 / 0.44, PnP-DM 0.22 / 0.14 (published rho_min = 0.3 and the mean of
# 20 samples: 0.68 / 0.25), Fast EM's loop with the operator known 0.53 / 0.14 (DiffPIR's, its data step by CG). DAPS is furthest: its isotropic N(x0hat, sigma_t^2) model of p(x0 | x_t)
# ignores the prior's pixel correlations that fill the holes; RED-diff and DeqIR are not posterior
# samplers (an Adam point estimate; a deterministic chain), nor is DDNM, which ignores the
# noise (hence its SR distance); DiffPIR's rho uses half the noise std (its released units). The
# bounds leave ~30% headroom and sit far below what a sign or scale bug gives: the no-sampler answers
# are the prior mean (d = 2.9 / 2.2) and, for inpainting, the prior mean in the holes with A^+ y
# elsewhere (d = 1.8).
MEAN_BOUND = {"dps": 0.4, "daps": 0.75, "reddiff": 0.55, "deqir": 0.32, "spgd": 0.45, "diffpir": 0.72,
              "ddnm": 0.52, "ddnm_plus": 0.62, "ddrm": 0.56, "pigdm": 0.58, "pnpdm": 0.3, "fast_em": 0.7}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_output_centres_on_the_exact_posterior_mean(name, exact_problem):
    p = exact_problem
    out = exact_output(p, name)
    scale = rms(p["std"])
    distance = rms(out.mean(dim=0) - p["mean"]) / scale
    baseline = rms(p["prior"].mean.float() - p["mean"]) / scale
    if p["name"] == "inpainting":  # under SR that pseudo-inverse is itself near-optimal: its null space
        baseline = min(baseline, rms(p["pinv"][0] - p["mean"]) / scale)  # holds independent high frequencies
    assert distance < MEAN_BOUND[name] < baseline / 2.4


@pytest.mark.parametrize("name, low, high", [("dps", 0.6, 1.05), ("daps", 0.95, 1.6), ("pnpdm", 0.85, 1.2)])
def test_samplers_spread_like_the_posterior(name, low, high, exact_problem):
    p = exact_problem
    spread = rms(exact_output(p, name).std(dim=0)) / rms(p["std"])
    # The sample std of 64 draws is within ~9% (1/sqrt(2*63)) of the truth per pixel, far less as an
    # rms over pixels. The bands hold each method's own, understood bias: DPS (measured 0.82 / 0.83)
    # under-disperses because its normalised step zeta/|y - A x0hat| over-weights the likelihood
    # late in the chain; DAPS (1.38 / 1.34) over-disperses because each level adds Langevin noise of
    # std r_t = sigma_t around the ODE estimate, which accumulates in directions whose prior variance
    # lambda exceeds sigma_t^2 (excess variance e <- lambda (e + sigma_i^2) / (lambda + sigma_{i+1}^2)).
    # PnP-DM's last sample (1.05 / 0.99) is a draw of the exact split-Gibbs target, the posterior at rho_min.
    assert low < spread < high


def test_deqir_parallel_solve_equals_the_sequential_chain():
    prior = GaussianPrior(8, channels=1)
    op = make_operator("inpainting", kind="random", fraction=0.5, noise_sigma=0.0)
    truth = prior.sample(make_generators(1, 1, "truth"))
    y = op.measure(truth, make_generators(0, 1, "measure")).expand(4, 1, 8, 8).contiguous()
    kwargs = dict(steps=20, progress=False, seed=[0, 1, 2, 3])
    sequential = SAMPLERS["deqir"](prior, op, y, solver="sequential", **kwargs)
    trace = Trace(keep_images=False)
    parallel = SAMPLERS["deqir"](prior, op, y, max_iter=40, tol=1e-4, trace=trace, **kwargs)
    # both solve the same fixed point; at relative residual 1e-4 the outputs agree to ~2e-4 (measured
    # 1.7e-4; a pixel's spread is 0.23, the float32 error of the map itself 1e-5)
    assert (parallel - sequential).abs().max() < 1e-3
    assert len(trace.loss) < 38  # it stopped on the tolerance, not on max_iter (one record per iteration >= 2)
    assert torch.allclose(op.A(sequential), y, atol=1e-4)  # noiseless DDNM: A x = y exactly


@pytest.mark.parametrize("task", ["inpainting", "super_resolution"])
def test_deqir_noise_handling_centres_on_the_posterior_mean_at_high_noise(task):
    # at sigma_y = 0.2 the noise-free chain copies the noise into the range (measured d = 0.59 / 0.83,
    # inpainting / SR); DDNM+'s per-singular-value step does not (0.21 / 0.31); 64 seeds as in the exact tests
    prior = GaussianPrior(8, channels=1 if task == "inpainting" else 3)
    op = (make_operator("inpainting", kind="random", fraction=0.5, noise_sigma=0.2) if task == "inpainting"
          else make_operator("super_resolution", scale=2, noise_sigma=0.2))
    y = op.measure(prior.sample(make_generators(1, 1, "truth")), make_generators(0, 1, "measure"))
    mean, std = prior.posterior(op, y)
    y = y.expand(COPIES, *y.shape[1:]).contiguous()

    def distance(**settings) -> float:
        out = SAMPLERS["deqir"](prior, op, y, seed=list(range(COPIES)), progress=False, steps=50, **settings)
        return rms(out.mean(dim=0) - mean[0]) / rms(std)

    assert distance() < 0.4 < 0.55 < distance(noise_aware=False)


def test_deqir_parallel_solve_follows_the_noise_aware_chain():
    prior = GaussianPrior(8, channels=3)
    op = make_operator("super_resolution", scale=2, noise_sigma=0.1)
    y = op.measure(prior.sample(make_generators([1, 2], 2, "truth")), make_generators([0, 1], 2, "measure"))
    kwargs = dict(steps=20, progress=False, seed=[0, 1], etw=0.1)
    sequential = SAMPLERS["deqir"](prior, op, y, solver="sequential", **kwargs)
    parallel = SAMPLERS["deqir"](prior, op, y, max_iter=40, tol=1e-5, **kwargs)
    assert (parallel - sequential).abs().max() < 1e-3  # the joint map's walk is the chain's own step
    # with the noise handling the output does not copy y's noise: its fit is that of the noise-free chain or worse
    plain = SAMPLERS["deqir"](prior, op, y, solver="sequential", noise_aware=False, **kwargs)
    assert (op.A(plain) - y).abs().max() < 1e-4 < (op.A(sequential) - y).abs().max()


def test_gaussian_prior_denoiser_is_its_own_posterior_mean():
    prior = GaussianPrior(8, channels=3)
    op = make_operator("inpainting", mask=torch.ones(1, 1, 8, 8), noise_sigma=0.3)
    y = op.measure(prior.sample(make_generators(0, 2, "truth")), make_generators(0, 2, "measure"))
    mean, std = prior.posterior(op, y)
    assert torch.allclose(mean, prior.denoise(y.double(), 0.3), atol=1e-10)
    per_image = prior.denoise(y, torch.tensor([0.3, 5.0]))
    assert torch.allclose(per_image[0], prior.denoise(y[:1], 0.3)[0], atol=1e-6)
    assert (std < 0.3).all()
    draws = prior.sample(make_generators(0, 4000, "draws"))
    assert abs(draws.var(dim=0).mean().sqrt() - 0.4) < 0.02  # pixel_std, up to sampling error


def test_fft_pseudo_inverse_of_a_blur():
    g = torch.Generator().manual_seed(0)
    kernel = torch.rand(5, 5, generator=g)
    kernel /= kernel.sum()
    x = torch.randn(2, 3, 12, 12, generator=g, dtype=torch.float64)
    k = transfer_function(kernel, 12, 12)
    circular = torch.fft.ifft2(torch.fft.fft2(x) * k).real
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="circular")
    direct = torch.nn.functional.conv2d(padded.reshape(1, 6, 16, 16), kernel.double().expand(6, 1, 5, 5), groups=6)
    assert torch.allclose(circular, direct.reshape(x.shape), atol=1e-12)  # correlation, not convolution
    op = make_operator("blur", kernel=kernel, pinv_cutoff=3e-2)
    assert torch.allclose(op.null(op.null(x)), op.null(x), atol=1e-12)
    assert op.null(op.A_pinv(circular)).abs().max() < 1e-12
    # the operator pads by reflection: the circular model agrees away from the border
    assert torch.allclose(op.A(x)[..., 2:-2, 2:-2], circular[..., 2:-2, 2:-2], atol=1e-12)
    # DeqIR on a blur: the output's range part is A^+ y (DDNM consistency through the FFT pseudo-inverse)
    y = op.A(x.float())
    out = SAMPLERS["deqir"](GaussianPrior(12, channels=3), op, y, steps=5, solver="sequential", progress=False)
    assert torch.allclose(out - op.null(out), op.A_pinv(y), atol=1e-4)


def gaussian_batch(fail: int | None = None):
    """Three 3x8x8 images from the Gaussian prior, inpainted with per-image masks; image `fail` corrupted."""
    prior = GaussianPrior(8, channels=3)
    op = make_operator("inpainting", kind="random", fraction=0.5, noise_sigma=0.05)
    x = prior.sample(make_generators([10, 11, 12], 3, "truth"))
    y = op.measure(x, make_generators([10, 11, 12], 3, "measure"))
    if fail is not None:
        y[fail] = float("nan")
    return prior, op, x, y


@pytest.mark.parametrize("name", sorted(FAST))
def test_seeded_runs_are_deterministic_and_batch_independent(name):
    prior, op, x, y = gaussian_batch()
    run = SAMPLERS[name]
    batch = run(prior, op, y, seed=[10, 11, 12], progress=False, **FAST[name])
    assert torch.equal(batch, run(prior, op, y, seed=[10, 11, 12], progress=False, **FAST[name]))
    assert not torch.equal(batch, run(prior, op, y, seed=[20, 21, 22], progress=False, **FAST[name]))
    for i in range(3):
        op_i = make_operator("inpainting", mask=op.mask[i: i + 1], noise_sigma=0.05)
        single = run(prior, op_i, y[i: i + 1], seed=[10 + i], progress=False, **FAST[name])
        assert (single - batch[i: i + 1]).abs().max() < 1e-5


@pytest.mark.parametrize("name", sorted(FAST))
def test_divergence_raises_naming_the_step_and_image(name):
    prior, op, _, y = gaussian_batch(fail=1)
    with pytest.raises(DivergenceError, match=r"diverged at step \d+ for image\(s\) \[1\]: NaN/inf"):
        SAMPLERS[name](prior, op, y, seed=0, progress=False, **FAST[name])


@pytest.mark.parametrize("name", sorted(FAST))
def test_divergent_image_is_marked_while_the_others_finish(name):
    prior, op, _, y = gaussian_batch(fail=1)
    trace = Trace(keep_images=False)
    x = SAMPLERS[name](prior, op, y, seed=0, progress=False, on_nan="mark", trace=trace, **FAST[name])
    assert torch.isfinite(x[[0, 2]]).all() and torch.isnan(x[1]).all()
    assert set(trace.failed) == {1}


NEEDS = {"deqir": "a pseudo-inverse", "ddnm": "a pseudo-inverse", "pigdm": "a pseudo-inverse",
         "ddnm_plus": "a singular value decomposition", "ddrm": "a singular value decomposition",
         "diffpir": "a singular value decomposition"}


@pytest.mark.parametrize("name", sorted(NEEDS))
@pytest.mark.parametrize("task", [dict(name="phase_retrieval"), dict(name="hdr")])
def test_unsupported_operator_is_a_clear_error(name, task):
    prior = GaussianPrior(8, channels=3)
    op = make_operator(**task)
    with pytest.raises(ValueError, match=rf"{name} needs an operator with {NEEDS[name]}; {task['name']} has none"):
        SAMPLERS[name](prior, op, torch.zeros(1, 3, 8, 8), progress=False)


@pytest.mark.parametrize("name", ["ddrm", "ddnm_plus", "diffpir"])
def test_a_blur_without_svd_says_what_would_give_it_one(name):
    kernel = torch.zeros(1, 3, 3)
    kernel[0, 1] = 1 / 3  # a horizontal motion kernel: rank one, but per image and ...
    kernel[0, 0, 0] = 0.1  # ... no longer separable
    op = make_operator("motion_blur", kernel_size=3, kernel=kernel, noise_sigma=0.05)
    with pytest.raises(ValueError, match=r"motion_blur has none \(its reflect-padded kernel is not separable; "
                                         r"boundary='circular' gives an exact FFT one\)"):
        SAMPLERS[name](GaussianPrior(8, channels=3), op, torch.zeros(1, 3, 8, 8), progress=False)
    op.update(boundary="circular")
    assert op.supports("svd")
    out = SAMPLERS[name](GaussianPrior(8, channels=3), op, torch.zeros(1, 3, 8, 8), progress=False, **FAST[name])
    assert torch.isfinite(out).all()


def test_pnpdm_needs_measurement_noise_and_uses_langevin_without_svd():
    prior, op, _, y = gaussian_batch()
    with pytest.raises(ValueError, match="pnpdm .* needs noise_sigma > 0"):
        SAMPLERS["pnpdm"](prior, make_operator("inpainting", mask=op.mask, noise_sigma=0.0), y, progress=False)
    hdr = make_operator("hdr", scale=2.0, noise_sigma=0.05)
    x = prior.sample(make_generators([1], 1, "truth"))
    out = SAMPLERS["pnpdm"](prior, hdr, hdr.measure(x, make_generators([1], 1, "measure")), progress=False,
                            **{**FAST["pnpdm"], "langevin_steps": 5})
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_ddnm_is_noise_free_consistent_and_ddnm_plus_is_ddnm_without_noise():
    prior = GaussianPrior(8, channels=1)
    op = make_operator("inpainting", kind="random", fraction=0.5, noise_sigma=0.0)
    truth = prior.sample(make_generators([1, 2], 2, "truth"))
    y = op.measure(truth, make_generators([0, 1], 2, "measure"))
    kwargs = dict(steps=20, seed=[3, 4], progress=False, travel_length=3, travel_repeat=2)
    out = SAMPLERS["ddnm"](prior, op, y, **kwargs)
    assert torch.allclose(op.A(out), y, atol=1e-5)  # the last step lands on A^+ y + (I - A^+ A) x0
    assert torch.equal(SAMPLERS["ddnm_plus"](prior, op, y, **kwargs), out)


def test_time_travel_follows_repaints_jump_schedule():
    from spgd.samplers.ddnm import travel_path

    assert travel_path(4, 1, 1) == [0, 1, 2, 3, 4]
    # RePaint's schedule for 6 levels, length 2, 2 repeats, as ladder slots: 5 4 3 2 (3 4) 3 2 1 0 (1 2) 1 0 -1;
    # the re-noisings up (in brackets) keep only the last, so they are one jump here (levels are 5 - slot)
    # 6 levels (slots 5..0, then -1), length 2, 2 repeats: jumps after slots 2 and 0 (multiples of 2 below 6 - 2)
    assert travel_path(6, 2, 2) == [0, 1, 2, 3, 1, 2, 3, 4, 5, 3, 4, 5, 6]


@pytest.mark.parametrize("name, bad, message", [
    ("dps", dict(steps=1001), "steps must be in 1..1000"), ("daps", dict(ode_sigma_min=0.5), "ode_sigma_min"),
    ("reddiff", dict(steps=0), "steps must be in 1..1000"), ("deqir", dict(solver="picard"), "unknown DeqIR solver"),
    ("spgd", dict(mode="magic"), "unknown SPGD mode"),
    ("reddiff", dict(steps=600), "steps must divide"), ("deqir", dict(steps=300), "steps must divide"),  # reach the top
    ("ddrm", dict(steps=7), "steps must divide"), ("ddnm", dict(steps=300), "steps must divide"),
    ("pigdm", dict(eta=2.0), "eta must be in"), ("ddnm_plus", dict(travel_length=0), "travel_length >= 1"),
    ("diffpir", dict(steps=1), "steps >= 2"), ("diffpir", dict(steps=900), "too many for the quadratic spacing"),
    ("ddrm", dict(eta_b=1.5), "eta_b <= 1"), ("pnpdm", dict(samples=50), "burn_in \\+ samples <= steps"),
])
def test_invalid_settings_are_clear_errors(name, bad, message):
    prior, op, _, y = gaussian_batch()
    with pytest.raises(ValueError, match=message):
        SAMPLERS[name](prior, op, y, progress=False, **{**FAST[name], **bad})


@pytest.mark.parametrize("task", task_names())
def test_presets_hold_only_real_task_specific_settings(task):
    preset = load_task(task)
    assert set(preset) <= {"default", "description", "operator", "sampler", *SAMPLERS}, task
    from spgd.methods import METHODS
    from spgd.tasks import preset_methods

    assert set(preset_methods(task)) <= set(METHODS), task  # the methods the task runs when none is named
    for name in SAMPLERS:
        defaults = sampler_settings(name)
        for key, value in preset_settings(preset, name).items():
            assert key in defaults, (task, name, key)
            assert value != defaults[key], f"{task}: {name}.{key} = {value} restates the default"


def test_sampler_defaults_are_the_published_general_settings():
    assert {k: sampler_settings("daps")[k] for k in DAPS_1K} == DAPS_1K  # DAPS-1K: 200 levels x 5 ODE steps
    assert {k: sampler_settings("spgd")[k] for k in ("steps", "inner_steps", "sigma_max", "beta")} == \
        {"steps": 200, "inner_steps": 5, "sigma_max": 100.0, "beta": 0.9}
    assert sampler_settings("dps")["steps"] == sampler_settings("reddiff")["steps"] == 1000


@pytest.mark.parametrize("name", sorted(ADM))
def test_every_sampler_runs_on_the_tiny_adm(name, tiny_prior):
    op = make_operator("super_resolution", scale=4, noise_sigma=0.01)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1,
                                        size=(64, 64), mode="bilinear", align_corners=False)
    y = op.measure(x, make_generators(0, 1, "measure"))
    out = SAMPLERS[name](tiny_prior, op, y, seed=0, progress=False, **ADM[name])
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()


def test_cli_runs_dps_with_its_task_preset(tmp_path, tiny_prior_path, capsys):
    folder = tmp_path / "clean"
    folder.mkdir()
    write_face_like(folder / "face.png")
    out = tmp_path / "out"
    code = main(["restore", "-i", str(folder), "-t", "super_resolution", "-m", str(tiny_prior_path), "--simulate",
                 "--sampler", "dps", "--steps", "2", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    config = yaml.safe_load((out / "config.yaml").read_text())
    resolved = make_spec(None, "super_resolution", "dps", settings={"steps": 2}).settings
    assert config["sampler"] == "dps" and config["sampler_settings"] == resolved
    assert resolved == {**sampler_settings("dps"), "steps": 2}
    assert json.loads((out / "metrics.json").read_text())["images"]["face.png"]["failed"] is False
