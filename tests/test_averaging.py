"""`mean_of`: the mean of several independently seeded runs of any sampler, an estimate of the posterior mean."""
from __future__ import annotations

import pytest
import torch
import yaml

from spgd.api import restore
from spgd.cli import main
from spgd.io import load_image
from spgd.operators import make_operator
from spgd.priors.gaussian import GaussianPrior
from spgd.samplers import SAMPLERS, Trace, sampler_settings
from spgd.samplers.averaging import mean_of_runs, run_seeds
from spgd.seeding import Seeds, StepNoise, make_generators, randn_per_image, start_draws
from spgd.run import make_spec

from .conftest import write_face_like
from .test_samplers import FAST, gaussian_batch, rms


def test_one_run_is_the_sampler_itself():
    prior, op, _, y = gaussian_batch()
    plain = SAMPLERS["spgd"](prior, op, y, seed=[10, 11, 12], progress=False, **FAST["spgd"])
    assert torch.equal(restore(y, op, prior, seed=[10, 11, 12], progress=False, mean_of=1, **FAST["spgd"]),
                       restore(y, op, prior, seed=[10, 11, 12], progress=False, **FAST["spgd"]))
    assert torch.equal(restore(y, op, prior, seed=[10, 11, 12], progress=False, **FAST["spgd"]),
                       ((plain + 1) / 2).clamp(0, 1))


@pytest.mark.parametrize("name", ["spgd", "dps"])
def test_mean_of_runs_averages_independent_per_image_runs(name):
    prior, op, _, y = gaussian_batch()
    seeds = [10, 11, 12]
    runs = [SAMPLERS[name](prior, op, y, seed=run_seeds(seeds, k), progress=False, **FAST[name]) for k in range(3)]
    mean = mean_of_runs(SAMPLERS[name], prior, op, y, runs=3, seed=seeds, progress=False, **FAST[name])
    assert torch.allclose(mean, sum(runs) / 3, atol=1e-6)
    assert not torch.allclose(runs[0], runs[1], atol=1e-3)  # the runs are different draws
    all_seeds = [s for k in range(3) for s in run_seeds(seeds, k)]
    assert len(set(all_seeds)) == 9 and run_seeds(seeds, 0) == seeds
    # image 1 alone, with its own mask and seed, gets the same mean: the batch does not matter
    op_1 = make_operator("inpainting", mask=op.mask[1:2], noise_sigma=0.05)
    alone = mean_of_runs(SAMPLERS[name], prior, op_1, y[1:2], runs=3, seed=[11], progress=False, **FAST[name])
    assert (alone - mean[1:2]).abs().max() < 1e-5


def test_the_mean_of_runs_approaches_the_exact_posterior_mean():
    """Gaussian prior, 2x SR: the posterior is known. A run's error to the posterior mean is about one posterior
    std (the draw's own spread) plus the sampler's bias; the mean of 16 runs keeps 1/16 of the spread."""
    prior = GaussianPrior(8, channels=3)
    op = make_operator("super_resolution", scale=2, noise_sigma=0.1)
    x = prior.sample(make_generators([1, 2, 3, 4], 4, "truth"))
    y = op.measure(x, make_generators([1, 2, 3, 4], 4, "measure"))
    exact, std = prior.posterior(op, y)
    settings = dict(steps=250, zeta=0.3, clip_denoised=False)  # as in test_samplers' exact problems
    one = SAMPLERS["dps"](prior, op, y, seed=0, progress=False, **settings)
    mean = mean_of_runs(SAMPLERS["dps"], prior, op, y, runs=16, seed=0, progress=False, **settings)
    error_one, error_mean = rms(one - exact) / rms(std), rms(mean - exact) / rms(std)
    assert 0.6 < error_one < 1.3  # a draw: about one posterior std away (measured 0.85)
    assert error_mean < error_one / 2.5  # sqrt(1/16 + bias^2): measured 0.21


@pytest.mark.parametrize("name, settings", [("spgd", dict(FAST["spgd"], mode="reference")), ("ddnm", FAST["ddnm"])])
def test_an_antithetic_pair_of_an_affine_sampler_is_the_same_for_every_seed(name, settings):
    """On a Gaussian prior with a linear operator SPGD's reference mode (start noise only) and DDNM (fresh
    noise at every step too) are affine in their draws: a run is c + L z, so (run(z) + run(-z)) / 2 = c
    whatever the seed, while pairs from independent seeds differ by the posterior's spread."""
    prior, op, _, y = gaussian_batch()

    def pair(seeds, antithetic):
        return mean_of_runs(SAMPLERS[name], prior, op, y, runs=2, antithetic=antithetic, seed=seeds,
                            progress=False, **settings)

    spread = rms(pair([10, 11, 12], False) - pair([50, 51, 52], False))
    assert spread > 0.05
    assert rms(pair([10, 11, 12], True) - pair([50, 51, 52], True)) < 1e-4 * spread


def test_an_antithetic_twin_starts_from_its_partners_negated_draws():
    """SPGD draws only its start, sigma_max z: the twin of run 0 is the run from -sigma_max z. An odd K's last
    run has no twin, and an image alone gets the mean it gets in a batch."""
    prior, op, _, y = gaussian_batch()
    settings, seeds = FAST["spgd"], [10, 11, 12]
    spgd = SAMPLERS["spgd"]
    sigma_max = min(100.0, prior.sigma_max)  # SPGD's default start, clamped to the prior's range
    start = sigma_max * randn_per_image((3, 8, 8), make_generators(seeds, 3, "sampler"))
    runs = [spgd(prior, op, y, seed=seeds, progress=False, **settings),
            spgd(prior, op, y, x_start=-start, seed=seeds, progress=False, **settings),
            spgd(prior, op, y, seed=run_seeds(seeds, 2), progress=False, **settings)]
    three = mean_of_runs(spgd, prior, op, y, runs=3, antithetic=True, seed=seeds, progress=False, **settings)
    assert torch.allclose(three, sum(runs) / 3, atol=1e-6)
    op_1 = make_operator("inpainting", mask=op.mask[1:2], noise_sigma=0.05)
    alone = mean_of_runs(spgd, prior, op_1, y[1:2], runs=3, antithetic=True, seed=[11], progress=False, **settings)
    assert (alone - three[1:2]).abs().max() < 1e-5


def test_a_twins_seeds_negate_its_normal_draws_and_nothing_else():
    def draws(seed):
        return start_draws((4,), seed, 1, "x"), StepNoise(seed, 1, "y", "cpu")((4,))

    plain, twin = draws([3]), draws(Seeds((3,), -1))
    assert torch.equal(plain[0], randn_per_image((4,), make_generators([3], 1, "x")))
    assert all(torch.equal(a, -b) for a, b in zip(plain, twin))
    assert all(torch.equal(a, b) for a, b in zip(plain, draws(Seeds((3,), 1))))
    assert all(torch.equal(a, b) for a, b in zip(plain, draws([3])))  # no state left behind


def test_a_failed_run_fails_its_image_only():
    prior, op, _, y = gaussian_batch(fail=1)
    trace = Trace(keep_images=False)
    x = mean_of_runs(SAMPLERS["spgd"], prior, op, y, runs=2, seed=0, progress=False, on_nan="mark", trace=trace,
                     **FAST["spgd"])
    assert torch.isfinite(x[[0, 2]]).all() and torch.isnan(x[1]).all()
    assert set(trace.failed) == {1}


def test_a_trace_sees_every_step_of_every_run():
    """The web page's progress and cancel live in the trace: it must see all runs, not only the first."""
    prior, op, _, y = gaussian_batch()
    trace = Trace(keep_images=False)
    mean_of_runs(SAMPLERS["spgd"], prior, op, y, runs=3, seed=0, progress=False, trace=trace, **FAST["spgd"])
    assert len(trace.sigma) == 3 * FAST["spgd"]["steps"]


def test_bad_uses_are_clear_errors():
    prior, op, _, y = gaussian_batch()
    with pytest.raises(ValueError, match="mean_of must be >= 1"):
        restore(y, op, prior, progress=False, mean_of=0, **FAST["spgd"])
    with pytest.raises(ValueError, match="x_start fixes every run's start"):
        restore(y, op, prior, x_start=torch.zeros(3, 3, 8, 8), progress=False, mean_of=2, **FAST["spgd"])
    with pytest.raises(ValueError, match="antithetic must be true or false, got 'yes'"):
        make_spec(None, "super_resolution", "spgd", settings={"antithetic": "yes"}).settings
    with pytest.raises(ValueError, match="mean_of must be a whole number"):
        make_spec(None, "super_resolution", "spgd", settings={"mean_of": 2.5}).settings
    with pytest.raises(ValueError, match="the overrides: mean_of must be >= 1, got 0"):
        make_spec(None, "super_resolution", "dps", settings={"mean_of": 0}).settings


def test_every_sampler_takes_mean_of_beside_its_own_settings():
    for name in SAMPLERS:
        assert sampler_settings(name)["mean_of"] == 1
    # PnP-DM's own `samples` (the iterates it averages within one chain) stays its own setting
    assert sampler_settings("pnpdm")["samples"] == 20
    assert make_spec(None, "super_resolution", "pnpdm", settings={"mean_of": 3}).settings["mean_of"] == 3


def test_the_command_line_flag_reaches_the_run_and_its_config(tmp_path):
    folder = tmp_path / "clean"
    folder.mkdir()
    write_face_like(folder / "face.png")
    outputs = {}
    for runs in (1, 2):
        out = tmp_path / f"mean_of_{runs}"
        assert main(["restore", "-i", str(folder), "-t", "super_resolution", "--simulate", "--steps", "2",
                     "--inner-steps", "1", "--mean-of", str(runs), "--threads", "1", "-o", str(out)]) == 0
        assert yaml.safe_load((out / "config.yaml").read_text())["sampler_settings"]["mean_of"] == runs
        outputs[runs] = load_image(out / "face.png")
    assert not torch.equal(outputs[1], outputs[2])
