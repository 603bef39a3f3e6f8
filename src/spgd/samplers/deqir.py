"""DeqIR: deep-equilibrium diffusion restoration with parallel sampling (Cao et al., CVPR 2024).

The T-step deterministic DDIM chain with DDNM null-space data consistency, in EDM variables
(sigma_m the level of step m's input, sigma'_m that of its output, sigma' = 0 after the last step):

    x0'_m = A^+ y + N x0hat(x_m),   x_{m+1} = x0'_m + sigma'_m eps_m,   N = I - A^+ A,

with eps_m = (x_m - D(x_m, sigma_m)) / sigma_m. Since N A^+ = 0 and N^2 = N, the chain unrolls to
one joint fixed point over all T outputs given x_T:

    x_{m+1} = A^+ y + N x_T + sum_{j<=m} (sigma'_j - sigma_j) N eps_j + sigma'_m (I - N) eps_m,

which `solver="anderson"` solves for all states at once (T network evaluations per iteration,
batched), by Anderson acceleration (history 5, regulariser 1e-3, at most 15 evaluations of the
map, stop at relative residual 1e-3, as released; see `anderson` for one difference).
`solver="sequential"` walks the same chain step by step (T evaluations in sequence), the
reference for the parallel solve's wall-clock advantage. States are kept in VP units (x_T ~ N(0, I)),
as in the released code; measurement noise is not modelled (plain DDNM). Operators with a
pseudo-inverse only: A^+ is `operator.A_pinv`, N is `operator.null` (for blurs the operator's
truncated pseudo-inverse: exact through the SVD for circular and separable blurs, through the FFT
under the circular-boundary approximation for the others). The chain is `ddnm.DDNMChain`, shared
with the DDNM sampler (which walks it with eta > 0).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..protocols import Denoiser, Operator
from .common import DivergenceGuard, Trace, require, start_noise
from .ddnm import DDNMChain

SOLVERS = ("anderson", "sequential")


def deqir(prior: Denoiser, operator: Operator, y: Tensor, x_start: Tensor | None = None,
          seed: int | Sequence[int] = 0, *, steps: int = 100, solver: str = "anderson", history: int = 5,
          max_iter: int = 15, tol: float = 1e-3, anderson_lam: float = 1e-3, anderson_beta: float = 1.0,
          shape: Sequence[int] | None = None, on_nan: str = "raise", check_every: int = 1,
          trace: Trace | None = None, progress: bool = True) -> Tensor:
    """Restore x from y = A(x) + noise with DeqIR; `x_start` is x_T in VP units (standard normal)."""
    require(operator, "pinv", "deqir")
    if solver not in SOLVERS:
        raise ValueError(f"unknown DeqIR solver {solver!r}; solvers: {SOLVERS}")
    if history < 2 or max_iter < 3:
        raise ValueError(f"need history >= 2 and max_iter >= 3, got {history} and {max_iter}")
    shape = tuple(shape) if shape is not None else operator.input_shape(y)
    x_T = start_noise(shape, 1.0, seed, y.device, x_start)
    chain = DDNMChain(prior, operator, y, x_T, steps)
    guard = DivergenceGuard("DeqIR", y, operator.noise_sigma, on_nan, check_every,
                            "check the measurement and the operator", trace)

    def report(step: int, x: Tensor, sigma: float, last: bool) -> Tensor:
        fit = (operator.A(x) - y).flatten(1).pow(2).sum(dim=1) if last or (trace is not None and trace.curves) else None
        x = guard.check(step, x, fit if last else None, force=last)
        if trace is not None and trace.curves:
            trace.record(sigma, fit, None, x)
        return x

    if solver == "sequential":
        x = x_T
        for m in tqdm(range(steps), desc="DeqIR (sequential)", disable=not progress, leave=False):
            x = report(m, chain.step(m, x), chain.sigma_in[m], m == steps - 1)
            if guard.all_failed:
                break
        return x.detach()
    initial = x_T.unsqueeze(0).expand(steps, *shape).contiguous()
    return anderson(chain.joint, initial, history, max_iter, anderson_lam, anderson_beta, tol,
                    lambda k, x, last: report(k, x, 0.0, last), progress).detach()


def anderson(f: Callable[[Tensor], Tensor], z0: Tensor, history: int, max_iter: int, lam: float, beta: float,
             tol: float, report: Callable[[int, Tensor, bool], Tensor], progress: bool = False) -> Tensor:
    """Anderson-accelerated fixed point z = f(z) for z of shape T x batch x ...; returns f's last state per image.

    One set of mixing coefficients per image, for all its T states jointly (the released code
    solves one set per state, which converged several times slower on the exact Gaussian test
    problem). Image b stops counting at the first iteration where ||f(z) - z|| / ||f(z)|| over its
    T states falls below `tol`: its result is frozen there, so a batch gives what each image alone
    would. Stopping early needs one host synchronisation per iteration (at most `max_iter` - 2).
    """
    steps, batch = z0.shape[:2]

    def to_rows(z: Tensor) -> Tensor:
        return z.transpose(0, 1).reshape(batch, -1)

    def from_rows(r: Tensor) -> Tensor:
        return r.reshape(batch, steps, *z0.shape[2:]).transpose(0, 1)

    X = z0.new_zeros(batch, history, z0[:, 0].numel())
    F = torch.zeros_like(X)
    X[:, 0] = to_rows(z0)
    F[:, 0] = to_rows(f(z0))
    X[:, 1] = F[:, 0]
    F[:, 1] = to_rows(f(from_rows(X[:, 1])))
    H = z0.new_zeros(batch, history + 1, history + 1)
    H[:, 0, 1:] = H[:, 1:, 0] = 1
    rhs = z0.new_zeros(batch, history + 1, 1)
    rhs[:, 0] = 1
    result = from_rows(F[:, 1])[-1].clone()
    done = torch.zeros(batch, dtype=torch.bool, device=z0.device)
    bar = tqdm(range(2, max_iter), desc="DeqIR (Anderson)", disable=not progress, leave=False)
    for k in bar:
        n = min(k, history)
        G = torch.nan_to_num(F[:, :n] - X[:, :n], nan=0.0, posinf=0.0, neginf=0.0)
        H[:, 1:n + 1, 1:n + 1] = G @ G.transpose(1, 2) + lam * torch.eye(n, dtype=z0.dtype, device=z0.device)
        alpha = torch.linalg.solve(H[:, :n + 1, :n + 1], rhs[:, :n + 1])[:, 1:n + 1, 0]
        mixed = alpha[:, None] @ F[:, :n]
        if beta != 1.0:
            mixed = beta * mixed + (1 - beta) * (alpha[:, None] @ X[:, :n])
        X[:, k % history] = mixed[:, 0]
        F[:, k % history] = to_rows(f(from_rows(X[:, k % history])))
        residual = (F[:, k % history] - X[:, k % history]).norm(dim=1) / (1e-5 + F[:, k % history].norm(dim=1))
        live = torch.where(done.reshape(-1, *([1] * (z0.dim() - 2))), result, from_rows(F[:, k % history])[-1])
        done = done | (residual < tol)
        last = k == max_iter - 1 or bool(done.all())
        result = report(k, live, last)
        if last:
            break
    return result
