"""DeqIR's gradients through the equilibrium on a closed-form case: relative error and cost.

The exact Gaussian prior (8x8, `spgd.priors.gaussian`), a measured image, the noise-aware DeqIR chain
of T steps and a fixed random linear loss L = <w, x_0>. The reference is autograd through the chain
walked step by step; against it: the implicit gradient (adjoint fixed point by Anderson) at the
sampler's default tolerances and at tight ones, and the released phantom gradient (k damped steps,
tau = 0.1). Cost: images through the network forward, and backward passes (vector-Jacobian products)
through it, counted by a wrapper around the prior, for the solve and the gradient together.

    python bench/deqir_gradients.py
"""
from __future__ import annotations

import argparse
from typing import Any

import torch

from spgd.operators import make_operator
from spgd.priors.gaussian import GaussianPrior
from spgd.samplers.common import start_noise
from spgd.samplers.deqir import anderson_solver, equilibrium_output, make_chain
from spgd.seeding import make_generators


class Counted:
    """The prior, counting images through `denoise` and backward passes through its outputs, and the calls
    (batched: a call is one step of sequential depth)."""

    def __init__(self, prior: Any) -> None:
        self.prior, self.forward, self.backward, self.calls = prior, 0, 0, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.prior, name)

    def denoise(self, x: torch.Tensor, sigma: Any) -> torch.Tensor:
        out = self.prior.denoise(x, sigma)
        self.forward += x.shape[0]
        self.calls += 1
        if out.requires_grad:
            out.register_hook(lambda g: self._count(x.shape[0]))
        return out

    def _count(self, images: int) -> None:
        self.backward += images
        self.calls += 1


def problem(task: str, steps: int, noise: float):
    prior = Counted(GaussianPrior(8, channels=1 if task == "inpainting" else 3))
    op = (make_operator("inpainting", kind="random", fraction=0.5, noise_sigma=noise) if task == "inpainting"
          else make_operator("super_resolution", scale=2, noise_sigma=noise))
    y = op.measure(prior.prior.sample(make_generators([1], 1, "truth")), make_generators([0], 1, "measure"))
    shape = (1, prior.channels, 8, 8)
    chain = make_chain(prior, op, y, shape, [0], steps, True, 0.0, 0.0, 3e-2)
    return prior, chain, start_noise(shape, 1.0, [0], "cpu")


def gradients(task: str, steps: int, noise: float) -> list[tuple[str, float, float, int, int, int]]:
    """(method, relative error, cosine, forward images, backward images, sequential calls) rows."""
    prior, chain, x_T = problem(task, steps, noise)
    w = torch.randn(x_T.shape, generator=torch.Generator().manual_seed(5))
    x_T = x_T.requires_grad_()
    x = x_T
    for m in range(steps):
        x = chain.step(m, x)
    reference = torch.autograd.grad((x * w).sum(), x_T)[0]
    rows = [("autograd through the sequential chain", 0.0, 1.0, prior.forward, prior.backward, prior.calls)]
    methods = {"implicit (tol 1e-3 / adjoint 1e-4, the defaults)": dict(gradient="implicit"),
               "implicit (tol 1e-6 / adjoint 1e-6)": dict(gradient="implicit", adjoint_tol=1e-6, adjoint_max_iter=60),
               "phantom k = 1, tau = 0.1 (released default)": dict(gradient="phantom", phantom_steps=1),
               "phantom k = 5, tau = 0.1": dict(gradient="phantom", phantom_steps=5)}
    for name, settings in methods.items():
        prior.forward = prior.backward = prior.calls = 0
        tight = "1e-6" in name
        solve = anderson_solver(5, 60 if tight else 15, 1e-6 if tight else 1e-3, 1e-3, 1.0)
        out, _ = equilibrium_output(chain, x_T, solve, **settings)
        g = torch.autograd.grad((out * w).sum(), x_T)[0]
        error = float((g - reference).norm() / reference.norm())
        cosine = float(torch.nn.functional.cosine_similarity(g.flatten(), reference.flatten(), dim=0))
        rows.append((name, error, cosine, prior.forward, prior.backward, prior.calls))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25])
    parser.add_argument("--noise-sigma", type=float, default=0.1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| task | T | gradient | relative error | cosine | network images forward | backward | sequential calls |")
    print("|---|---|---|---|---|---|---|---|")
    for task in ("inpainting", "super_resolution"):
        for steps in args.steps:
            for name, error, cosine, forward, backward, calls in gradients(task, steps, args.noise_sigma):
                print(f"| {task} | {steps} | {name} | {error:.2g} | {cosine:.4f} | {forward} | {backward} | {calls} |")


if __name__ == "__main__":
    main()
