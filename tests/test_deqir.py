"""DeqIR's gradients through the equilibrium and its initialisation optimisation, on the exact Gaussian prior:
the implicit gradient against autograd through the sequential chain, the released phantom gradient
against its closed form, and x_T optimised toward a reference or for the measurement."""
from __future__ import annotations

import pytest
import torch
import yaml

from spgd.cli import main
from spgd.operators import make_operator
from spgd.priors.gaussian import GaussianPrior
from spgd.samplers import SAMPLERS
from spgd.samplers.common import start_noise
from spgd.samplers.deqir import anderson_solver, equilibrium_output, make_chain, make_objective, optimise_start
from spgd.seeding import make_generators
from spgd.weights import MissingWeightsError, weights_path

from .conftest import write_face_like

STEPS = 10


def problem(task: str, noise: float = 0.1):
    """A Gaussian prior, an operator, two measurements, the DeqIR chain and x_T (requiring a gradient)."""
    prior = GaussianPrior(8, channels=1 if task == "inpainting" else 3)
    op = (make_operator("inpainting", kind="random", fraction=0.5, noise_sigma=noise) if task == "inpainting"
          else make_operator("super_resolution", scale=2, noise_sigma=noise))
    y = op.measure(prior.sample(make_generators([1, 2], 2, "truth")), make_generators([0, 1], 2, "measure"))
    shape = (2, prior.channels, 8, 8)
    chain = make_chain(prior, op, y, shape, [0, 1], STEPS, True, 0.0, 0.0, 3e-2)
    return op, chain, start_noise(shape, 1.0, [0, 1], "cpu").requires_grad_()


def sequential_gradient(chain, x_T: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    x = x_T
    for m in range(STEPS):
        x = chain.step(m, x)
    return torch.autograd.grad((x * w).sum(), x_T)[0]


@pytest.mark.parametrize("task, noise", [("inpainting", 0.1), ("super_resolution", 0.1), ("super_resolution", 0.0)])
def test_implicit_gradient_equals_autograd_through_the_chain(task, noise):
    op, chain, x_T = problem(task, noise)
    w = torch.randn(x_T.shape, generator=torch.Generator().manual_seed(5))
    reference = sequential_gradient(chain, x_T, w)
    out, _ = equilibrium_output(chain, x_T, anderson_solver(5, 40, 1e-6, 1e-3, 1.0), "implicit", adjoint_tol=1e-6,
                                adjoint_max_iter=40)
    gradient = torch.autograd.grad((out * w).sum(), x_T)[0]
    # float32: measured relative errors 4e-5 (inpainting) and 2e-4 (SR); a wrong Jacobian is off by O(1)
    assert (gradient - reference).norm() / reference.norm() < 2e-3


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_phantom_gradient_with_one_step_is_the_released_null_space_projection(noise):
    op, chain, x_T = problem("inpainting", noise)
    w = torch.randn(x_T.shape, generator=torch.Generator().manual_seed(5))
    out, _ = equilibrium_output(chain, x_T, anderson_solver(5, 40, 1e-6, 1e-3, 1.0), "phantom", phantom_steps=1,
                                phantom_tau=0.1)
    gradient = torch.autograd.grad((out * w).sum(), x_T)[0]
    # no network Jacobian: tau N w / sqrt(alpha_bar_T) (under the noise handling the observed pixels are reset to
    # y at the noisiest levels, so they carry none of x_T either)
    assert torch.allclose(gradient, 0.1 * op.null(w) / chain.scale_in[0], rtol=1e-5, atol=1e-6)
    five, _ = equilibrium_output(chain, x_T, anderson_solver(5, 40, 1e-6, 1e-3, 1.0), "phantom", phantom_steps=5)
    assert not torch.allclose(torch.autograd.grad((five * w).sum(), x_T)[0], gradient, atol=1e-3)


def test_bad_gradient_settings_are_clear_errors():
    _, chain, x_T = problem("inpainting")
    solve = anderson_solver(5, 15, 1e-3, 1e-3, 1.0)
    with pytest.raises(ValueError, match="unknown DeqIR gradient"):
        equilibrium_output(chain, x_T, solve, "exact")
    with pytest.raises(ValueError, match="phantom_tau"):
        equilibrium_output(chain, x_T, solve, "phantom", phantom_tau=0.0)


def sr_problem():
    prior = GaussianPrior(8, channels=3)
    op = make_operator("super_resolution", scale=2, noise_sigma=0.1)
    truth = prior.sample(make_generators([1, 2], 2, "truth"))
    return prior, op, truth, op.measure(truth, make_generators([0, 1], 2, "measure"))


INIT = dict(steps=10, progress=False, init_steps=6, adjoint_max_iter=15)


def test_initialisation_toward_a_reference_moves_the_result_to_it():
    prior, op, truth, y = sr_problem()
    plain = SAMPLERS["deqir"](prior, op, y, seed=[0, 1], steps=10, progress=False)
    steered = SAMPLERS["deqir"](prior, op, y, seed=[0, 1], init_objective="l2", reference=truth, init_lr=0.1, **INIT)
    error = (steered - truth).pow(2).flatten(1).mean(dim=1)
    assert (error < 0.85 * (plain - truth).pow(2).flatten(1).mean(dim=1)).all()  # measured 0.71x (6 Adam steps)


def test_measurement_objective_decreases_and_initialisation_is_seeded_per_image():
    prior, op, truth, y = sr_problem()
    shape = (2, 3, 8, 8)
    chain = make_chain(prior, op, y, shape, [0, 1], 10, True, 0.0, 0.0, 3e-2)
    objective = make_objective("measurement", op, y, None, 1.0, shape)
    solve = anderson_solver(5, 15, 1e-3, 1e-3, 1.0)
    x_T = start_noise(shape, 1.0, [0, 1], "cpu")
    best = optimise_start(chain, x_T, objective, solve, 6, 0.05, 2, dict(adjoint_max_iter=15), False)

    def value(start: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return objective(equilibrium_output(chain, start, solve)[0], start)

    assert (value(best) < value(x_T)).all()
    pair = SAMPLERS["deqir"](prior, op, y, seed=[0, 1], **INIT)
    single = SAMPLERS["deqir"](prior, op, y[1:], seed=[1], **INIT)
    assert torch.allclose(pair[1:], single, atol=1e-5) and not torch.equal(pair[0], pair[1])


@pytest.mark.parametrize("settings, message", [
    (dict(init_objective="oracle"), "unknown DeqIR init_objective"),
    (dict(init_objective="l2"), "needs a reference image"),
    (dict(init_objective="l2", reference=torch.zeros(1, 3, 4, 4)), "reference has shape"),
    (dict(init_lr=0.0), "init_lr > 0"),
])
def test_bad_initialisation_settings_are_clear_errors(settings, message):
    prior, op, truth, y = sr_problem()
    with pytest.raises(ValueError, match=message):
        SAMPLERS["deqir"](prior, op, y, **{**INIT, **settings})


def test_measurement_objective_needs_measurement_noise():
    prior = GaussianPrior(8, channels=3)
    op = make_operator("super_resolution", scale=2, noise_sigma=0.0)
    y = op.A(prior.sample(make_generators([1], 1, "truth")))
    with pytest.raises(ValueError, match="needs measurement noise"):
        SAMPLERS["deqir"](prior, op, y, **INIT)


def test_lpips_objective_where_its_weights_are_cached():
    try:
        weights_path("lpips_alex")
    except MissingWeightsError as err:
        pytest.skip(f"LPIPS weights are not cached (`spgd weights fetch`): {err}")
    from spgd.metrics import lpips

    prior = GaussianPrior(64, channels=3)  # AlexNet needs more than 8x8 pixels
    op = make_operator("super_resolution", scale=4, noise_sigma=0.1)
    truth = prior.sample(make_generators([1], 1, "truth"))
    y = op.measure(truth, make_generators([0], 1, "measure"))
    plain = SAMPLERS["deqir"](prior, op, y, steps=10, progress=False)
    steered = SAMPLERS["deqir"](prior, op, y, init_objective="lpips", reference=truth, init_lr=0.1, **INIT)
    assert lpips((steered + 1) / 2, (truth + 1) / 2) < lpips((plain + 1) / 2, (truth + 1) / 2)


def test_cli_initialises_deqir_toward_a_reference_image(tmp_path, tiny_prior_path, capsys):
    face, guide = write_face_like(tmp_path / "face.png", seed=0), write_face_like(tmp_path / "guide.png", seed=1)
    out = tmp_path / "out"
    run = ["restore", "-i", str(face), "-t", "super_resolution", "-m", str(tiny_prior_path), "--simulate",
           "--sampler", "deqir", "--steps", "2", "--set", "max_iter=3", "init_steps=1", "init_objective=l2",
           "init_gradient=phantom", "--reference", str(guide), "-o", str(out)]
    assert main(run) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["sampler_settings"]["reference"] == str(guide)
    assert main(["restore", "-i", str(face), "-t", "super_resolution", "-m", str(tiny_prior_path), "--simulate",
                 "--steps", "2", "--reference", str(guide), "-o", str(tmp_path / "spgd")]) == 2
    assert "spgd takes no reference image (samplers that do: deqir)" in capsys.readouterr().err
