"""DeqIR's gradients through the equilibrium, on the exact Gaussian prior: the implicit gradient against
autograd through the sequential chain, and the released phantom gradient against its closed form."""
from __future__ import annotations

import pytest
import torch

from spgd.operators import make_operator
from spgd.priors.gaussian import GaussianPrior
from spgd.samplers.common import start_noise
from spgd.samplers.deqir import anderson_solver, equilibrium_output, make_chain
from spgd.seeding import make_generators

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
