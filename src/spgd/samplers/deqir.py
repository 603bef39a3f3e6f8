"""DeqIR: deep-equilibrium diffusion restoration with parallel sampling (Cao et al., CVPR 2024).

The T-step deterministic DDIM chain with DDNM null-space data consistency, in EDM variables
(sigma_m the level of step m's input, sigma'_m that of its output, sigma' = 0 after the last step):

    x0'_m = A^+ y + N x0hat(x_m),   x_{m+1} = x0'_m + sigma'_m eps_m,   N = I - A^+ A,

with eps_m = (x_m - D(x_m, sigma_m)) / sigma_m. Since N A^+ = 0 and N^2 = N, the chain unrolls to
one joint fixed point over all T outputs given x_T:

    x_{m+1} = A^+ y + N x_T + sum_{j<=m} (sigma'_j - sigma_j) N eps_j + sigma'_m (I - N) eps_m,

which `solver="anderson"` solves for all states at once (T network evaluations per iteration,
batched), by Anderson acceleration (history 5, regulariser 1e-3, at most 15 evaluations of the
map, stop at relative residual 1e-3, as released; see `anderson` for one difference). The map runs
the network once on all T guessed inputs, then walks the chain's (cheap) update from x_T with those
noise estimates, x0_m = x_m - sigma_m eps_m: for the chain above that is the unrolled sum exactly.
`solver="sequential"` walks the same chain step by step (T evaluations in sequence), the
reference for the parallel solve's wall-clock advantage. States are kept in VP units (x_T ~ N(0, I)),
as in the released code. Operators with a pseudo-inverse only: A^+ is `operator.A_pinv`, N is
`operator.null` (for blurs the operator's truncated pseudo-inverse: exact through the SVD for circular
and separable blurs, through the FFT under the circular-boundary approximation for the others). The
chain's levels are `ddnm.DDNMChain`'s, shared with the DDNM sampler (which walks it with eta > 0).

Noisy measurements (`noise_aware`, on by default; spgd's addition): where the operator has an SVD
A = U diag(s) V^T and noise_sigma > 0, each step is DDNM+'s (`ddrm.spectral_step`, the step DDNM+ and
DDRM share, eta_b = 1) in V-coordinates: the range correction of a coordinate is scaled by
lambda_i = min(1, s_i sigma' / sigma_y), and a coordinate noisier than the measurement (s_i sigma' >
sigma_y) is reset to y_bar_i + sqrt(sigma'^2 - sigma_y^2 / s_i^2) d_i. DDNM+'s fresh noise z is
replaced by the chain's deterministic direction d = sqrt(1 - etw^2) eps + nw n, so the map stays a
fixed point. The last step (sigma' = 0) returns x0 without range correction, as DDNM+ does. Without
an SVD (blurs under the FFT approximation, ...), or with noise_sigma = 0, the noise-free chain above
runs. Singular values at or below `svd_cutoff` (3e-2) count as zero, as in `ddnm_plus`.

The released knobs `etw` and `nw` (both 0 by default, as released; the README's deblurring example
uses etw = 0.1) weigh the direction: eps by sqrt(1 - etw^2), plus nw times one standard normal draw n
per image shared by all steps (as released: it keeps the map deterministic), drawn from the seed.

Gradients through the equilibrium (`equilibrium_output`) w.r.t. x_T: "implicit", the exact gradient
(adjoint fixed point g = J^T g + v by the same Anderson solver, `adjoint_tol`, `adjoint_max_iter`), or
"phantom", the released backward (`phantom_steps` damped steps z <- (1 - tau) z + tau F(z) from the
detached equilibrium, `phantom_tau`; released defaults 1 and 0.1, with which the gradient is
tau N dL/dx_0 / sqrt(alpha_bar_T): no network Jacobian). BENCHMARKS.md measures both against autograd.

Initialisation optimisation (`init_steps` > 0; spgd's settings, released as `--ls_sr_opt`): Adam on
x_T for at most `init_steps` steps (`init_lr`), an image stopping when its objective has not improved
for `init_patience` steps and keeping its best x_T; each step solves the equilibrium warm-started from
the last one, then the restore runs from the best x_T (with `solver`). Objectives (`make_objective`):
"measurement" (no ground truth; data fit plus a prior on x_T's norm), "l2" or "lpips" to `reference`
(`spgd restore --reference IMG`; "control the generation direction"). Measured on 20 faces (4x SR,
BENCHMARKS.md): the measurement-only objective loses 0.38 dB (the data term sees only A's range, which
the chain already fits to the noise level), the ground-truth L2 target gains 3.0 dB.

Deviations from the released code (caojiezhang/DeqIR):
- Noise handling (released: none; A^+ y is injected whatever sigma_y; DDNM+'s Lambda is defined but
  never called). `noise_aware=False` is the released chain.
- One set of Anderson mixing coefficients per image, not per state (see `anderson`).
- Initialisation: the release cannot run as shipped (it imports a module whose source is absent). Its
  objective is the L2 to the ground-truth image (here only in the benchmark, as the "oracle"), LPIPS-VGG
  to a SwinIR output or to a reference image; Adam at lr 2e-5 for up to 2,000 steps, early stop at a
  loss below 0.1, only the phantom gradient, a cold Anderson start (m = 3, damping 0.9, tol 1e-2) each
  step. Here: the implicit gradient by default, warm starts, patience-based stopping, a measurement-only
  objective, LPIPS-AlexNet, per-image seeds and stopping.
- Random draws per image from the seed.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..protocols import Denoiser, Operator
from ..seeding import StepNoise
from .common import DivergenceGuard, Trace, require, start_noise
from .ddnm import DDNMChain
from .ddrm import Spectral, spectral_step

SOLVERS = ("anderson", "sequential")
GRADIENTS = ("implicit", "phantom")
OBJECTIVES = ("measurement", "l2", "lpips")


class DeqIRChain(DDNMChain):
    """DeqIR's deterministic chain (module docstring): DDNM's step, or DDNM+'s where `spectral` is given, with the
    released etw/nw direction; one step at a time (`step`) or as the joint map of all T outputs (`joint`)."""

    def __init__(self, prior: Denoiser, operator: Operator, y: Tensor, steps: int, etw: float, nw: float,
                 shared_noise: Tensor | None, spectral: Spectral | None) -> None:
        super().__init__(prior, operator, y, steps)
        self.keep, self.nw, self.noise, self.spectral = math.sqrt(1 - etw ** 2), nw, shared_noise, spectral
        self.noise_bar = None
        if spectral is not None and shared_noise is not None:
            with torch.no_grad():
                self.noise_bar = spectral.svd.V_adjoint(shared_noise)

    def _direction(self, eps: Tensor, noise: Tensor | None) -> Tensor:
        direction = eps if self.keep == 1 else self.keep * eps
        return direction if noise is None else direction + self.nw * noise

    def update(self, m: int, x0: Tensor, eps: Tensor) -> Tensor:
        """Level m's output (EDM units) from its prediction (x0, eps)."""
        if self.spectral is None:
            return self.consistent(x0) + self.sigma_out[m] * self._direction(eps, self.noise)
        svd = self.spectral.svd
        eps_bar = svd.V_adjoint(eps)
        kick = eps_bar if self.noise_bar is None else self.noise_bar  # weight 0 without shared noise
        out = spectral_step(self.spectral, svd.V_adjoint(x0), eps_bar, self.sigma_out[m], self.keep,
                            self.nw if self.noise_bar is not None else 0.0, kick,
                            self._direction(eps_bar, self.noise_bar), 1.0)
        return svd.V(out)

    def step(self, m: int, x: Tensor) -> Tensor:
        """x_{m+1} from x_m (VP units)."""
        return self.update(m, *self.predict(m, x)) * self.scale_out[m]

    def joint(self, z: Tensor, x_T: Tensor, first: Tensor | None = None) -> Tensor:
        """All T outputs (T x batch x ..., VP units) from the current guess `z` of them: the network runs once,
        batched, on the T inputs (`first`, default x_T, then z's first T - 1 rows), then the update walks the
        levels from x_T with those noise estimates."""
        steps, batch = z.shape[:2]
        inputs = torch.cat([(x_T if first is None else first).unsqueeze(0), z[:-1]])
        scale_in = torch.tensor(self.scale_in, device=z.device).reshape(-1, 1, 1, 1, 1)
        sigma_in = torch.tensor(self.sigma_in, device=z.device)
        x = (inputs / scale_in).flatten(0, 1)
        sigmas = sigma_in.repeat_interleave(batch)
        eps = ((x - self.prior.denoise(x, sigmas)) / sigmas.reshape(-1, 1, 1, 1)).unflatten(0, (steps, batch))
        state, outputs = x_T / self.scale_in[0], []
        for m in range(steps):
            state = self.update(m, state - self.sigma_in[m] * eps[m], eps[m])
            outputs.append(state * self.scale_out[m])
        return torch.stack(outputs)


def deqir(prior: Denoiser, operator: Operator, y: Tensor, x_start: Tensor | None = None,
          seed: int | Sequence[int] = 0, *, steps: int = 100, solver: str = "anderson", history: int = 5,
          max_iter: int = 15, tol: float = 1e-3, anderson_lam: float = 1e-3, anderson_beta: float = 1.0,
          noise_aware: bool = True, etw: float = 0.0, nw: float = 0.0, svd_cutoff: float = 3e-2,
          init_steps: int = 0, init_objective: str = "measurement", init_lr: float = 0.02, init_patience: int = 5,
          init_prior_weight: float = 1.0, reference: Tensor | None = None, init_gradient: str = "implicit",
          adjoint_tol: float = 1e-4, adjoint_max_iter: int = 30, phantom_steps: int = 1, phantom_tau: float = 0.1,
          shape: Sequence[int] | None = None, on_nan: str = "raise", check_every: int = 1,
          trace: Trace | None = None, progress: bool = True) -> Tensor:
    """Restore x from y = A(x) + noise with DeqIR; `x_start` is x_T in VP units (standard normal).

    `init_steps` > 0 first optimises x_T (`optimise_start`) for `init_objective`, `reference` the image
    the "l2" and "lpips" objectives pull toward ([-1, 1], one per image or one for all)."""
    require(operator, "pinv", "deqir")
    if solver not in SOLVERS:
        raise ValueError(f"unknown DeqIR solver {solver!r}; solvers: {SOLVERS}")
    if history < 2 or max_iter < 3:
        raise ValueError(f"need history >= 2 and max_iter >= 3, got {history} and {max_iter}")
    if not (0 <= etw <= 1 and nw >= 0):
        raise ValueError(f"need 0 <= etw <= 1 and nw >= 0, got {etw} and {nw}")
    shape = tuple(shape) if shape is not None else operator.input_shape(y)
    x_T = start_noise(shape, 1.0, seed, y.device, x_start)
    chain = make_chain(prior, operator, y, shape, seed, steps, noise_aware, etw, nw, svd_cutoff)
    if init_steps > 0:
        objective = make_objective(init_objective, operator, y, reference, init_prior_weight, shape)
        x_T = optimise_start(chain, x_T, objective, anderson_solver(history, max_iter, tol, anderson_lam, anderson_beta),
                             init_steps, init_lr, init_patience, dict(gradient=init_gradient, adjoint_tol=adjoint_tol,
                                                                      adjoint_max_iter=adjoint_max_iter,
                                                                      phantom_steps=phantom_steps,
                                                                      phantom_tau=phantom_tau), progress)
    guard = DivergenceGuard("DeqIR", y, operator.noise_sigma, on_nan, check_every,
                            "check the measurement and the operator", trace)

    def report(step: int, x: Tensor, sigma: float, last: bool) -> Tensor:
        fit = (operator.A(x) - y).flatten(1).pow(2).sum(dim=1) if last or (trace is not None and trace.curves) else None
        x = guard.check(step, x, fit if last else None, force=last)
        if trace is not None and trace.curves:
            trace.record(sigma, fit, None, x)
        return x

    with torch.no_grad():
        if solver == "sequential":
            x = x_T
            for m in tqdm(range(steps), desc="DeqIR (sequential)", disable=not progress, leave=False):
                x = report(m, chain.step(m, x), chain.sigma_in[m], m == steps - 1)
                if guard.all_failed:
                    break
            return x
        initial = x_T.unsqueeze(0).expand(steps, *shape).contiguous()
        return anderson(lambda z: chain.joint(z, x_T), initial, history, max_iter, anderson_lam, anderson_beta, tol,
                        lambda k, x, last: report(k, x, 0.0, last), progress)[-1]


def make_chain(prior: Denoiser, operator: Operator, y: Tensor, shape: Sequence[int], seed: int | Sequence[int],
               steps: int, noise_aware: bool, etw: float, nw: float, svd_cutoff: float) -> DeqIRChain:
    """The chain of a DeqIR run: DDNM+'s step where the operator has an SVD and the measurement is noisy (and
    `noise_aware`), the shared noise drawn per image from the seed where nw > 0."""
    shared = StepNoise(seed, shape[0], "deqir", y.device)(shape[1:]) if nw > 0 else None
    spectral = None
    if noise_aware and operator.noise_sigma > 0 and operator.supports("svd"):
        with torch.no_grad():
            spectral = Spectral(operator.svd(shape, y.device), y, operator.noise_sigma, svd_cutoff)
    return DeqIRChain(prior, operator, y, steps, etw, nw, shared, spectral)


def make_objective(name: str, operator: Operator, y: Tensor, reference: Tensor | None, prior_weight: float,
                   shape: Sequence[int]) -> Callable[[Tensor, Tensor], Tensor]:
    """objective(x_0, x_T) per image, to minimise over x_T.

    "measurement" (needs no ground truth): ||A(x_0) - y||^2 / (2 sigma_y^2) + prior_weight (||x_T||^2 / 2 -
    (d - 1) log ||x_T||), the data fit plus the negative log-density of x_T's norm under N(0, I) (d its
    size), which keeps x_T on the shell where standard normal draws lie (||x_T||^2 / 2 alone would pull it
    to 0, nowhere near a draw). Needs sigma_y > 0: without noise the chain fits y exactly whatever x_T.
    "l2": the mean squared difference to `reference`; "lpips": LPIPS (AlexNet) to it (the released code's
    reference mode uses LPIPS-VGG).
    """
    if name not in OBJECTIVES:
        raise ValueError(f"unknown DeqIR init_objective {name!r}; objectives: {OBJECTIVES}")
    if name == "measurement":
        if operator.noise_sigma <= 0:
            raise ValueError("DeqIR's init_objective 'measurement' needs measurement noise (noise_sigma > 0): "
                             "without it the chain's output fits y exactly whatever x_T")
        size = math.prod(shape[1:])

        def measurement(x0: Tensor, x_T: Tensor) -> Tensor:
            fit = (operator.A(x0) - y).flatten(1).pow(2).sum(dim=1) / (2 * operator.noise_sigma ** 2)
            norm = x_T.flatten(1).norm(dim=1)
            return fit + prior_weight * (norm ** 2 / 2 - (size - 1) * norm.log())
        return measurement
    if reference is None:
        raise ValueError(f"DeqIR's init_objective {name!r} needs a reference image (--reference)")
    if tuple(reference.shape[1:]) != tuple(shape[1:]) or reference.shape[0] not in (1, shape[0]):
        raise ValueError(f"DeqIR's reference has shape {tuple(reference.shape)}, expected {tuple(shape)} "
                         f"or {(1, *shape[1:])}")
    target = reference.to(y.device, torch.float32).expand(*shape)
    if name == "l2":
        return lambda x0, x_T: (x0 - target).flatten(1).pow(2).mean(dim=1)
    from ..metrics import LPIPS

    distance = LPIPS("alex").to(y.device).requires_grad_(False)
    return lambda x0, x_T: distance(x0, target)


def optimise_start(chain: DeqIRChain, x_T: Tensor, objective: Callable[[Tensor, Tensor], Tensor],
                   solve: Callable, steps: int, lr: float, patience: int, gradient: dict, progress: bool) -> Tensor:
    """The x_T with the lowest objective found by Adam (`steps` updates at most, learning rate `lr`), per image: an
    image stops when its objective has not improved for `patience` steps, and keeps its best x_T. Each step
    solves the equilibrium warm-started from the last one, and back-propagates through it (`gradient`: the
    settings of `equilibrium_output`). The bar shows the mean objective."""
    if lr <= 0 or patience < 1:
        raise ValueError(f"need init_lr > 0 and init_patience >= 1, got {lr} and {patience}")
    x = x_T.clone().requires_grad_()
    optimiser = torch.optim.Adam([x], lr=lr)
    best, best_value = x_T.clone(), torch.full((x_T.shape[0],), math.inf, device=x_T.device)
    stale = torch.zeros(x_T.shape[0], dtype=torch.long, device=x_T.device)
    z = None
    bar = tqdm(range(steps + 1), desc="DeqIR (initialisation)", disable=not progress, leave=False)
    for step in bar:  # steps + 1 evaluations: the start and each of the `steps` updates
        with torch.enable_grad():
            out, z = equilibrium_output(chain, x, solve, z0=z, **gradient)
            value = objective(out, x)
        with torch.no_grad():
            improved = value < best_value
            best[improved] = x[improved]
            best_value = torch.where(improved, value, best_value)
            stale = torch.where(improved, 0, stale + 1)
            active = stale < patience
        if not bar.disable:
            bar.set_postfix(objective=f"{best_value.mean().item():.5g}")
        if step == steps or not bool(active.any()):
            break
        optimiser.zero_grad()
        with torch.enable_grad():
            (value * active).sum().backward()
        optimiser.step()
        with torch.no_grad():
            x[~active] = best[~active]
    return best


def anderson(f: Callable[[Tensor], Tensor], z0: Tensor, history: int, max_iter: int, lam: float, beta: float,
             tol: float, report: Callable[[int, Tensor, bool], Tensor] | None = None, progress: bool = False,
             desc: str = "DeqIR (Anderson)") -> Tensor:
    """Anderson-accelerated fixed point z = f(z) for z of shape T x batch x ...; returns f's last state (all T
    rows) per image. `report(k, last_row, last)` sees the last row of each iteration and may replace it.

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
    result = from_rows(F[:, 1]).clone()
    done = torch.zeros(batch, dtype=torch.bool, device=z0.device)
    bar = tqdm(range(2, max_iter), desc=desc, disable=not progress, leave=False)
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
        result = torch.where(done.reshape(1, -1, *([1] * (z0.dim() - 2))), result, from_rows(F[:, k % history]))
        done = done | (residual < tol)
        last = k == max_iter - 1 or bool(done.all())
        if report is not None:
            result[-1] = report(k, result[-1], last)
        if last:
            break
    return result


def equilibrium_output(chain: DeqIRChain, x_T: Tensor, solve: Callable[[Callable[[Tensor], Tensor], Tensor, float, int], Tensor],
                       gradient: str = "implicit", adjoint_tol: float = 1e-4, adjoint_max_iter: int = 30,
                       phantom_steps: int = 1, phantom_tau: float = 0.1, z0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The chain's output x_0 at its equilibrium given x_T, differentiable w.r.t. x_T (and whatever else the map
    depends on), and the equilibrium z* itself (no gradient; the warm start of a next solve, `z0`).

    `solve(f, start, tol, max_iter)` finds z = f(z) (here: `anderson` with the run's history and regulariser).
    gradient="implicit": the exact gradient of the equilibrium (implicit function theorem). The output is
    F(z*) (one map evaluation with autograd after the solve), and backward replaces its incoming gradient
    v by the solution of the adjoint fixed point g = J^T g + v, J = dF/dz at z*, solved by `solve` with
    `adjoint_tol` and `adjoint_max_iter` (each iteration one vector-Jacobian product through the T
    network evaluations), then carries g through F to x_T. (The released code has this, for the
    unconditional chain, as `find_source_noise_deq_ift` with Broyden, and never calls it.)
    gradient="phantom": the released code's default backward, `phantom_steps` damped steps
    z <- (1 - tau) z + tau F(z) from the detached z*, with autograd through them. As released, x_T is
    the chain's row 0, detached with z* and pinned to x_T by each step, so with one step the network's
    input carries no gradient: the gradient is tau N dL/dx_0 / sqrt(alpha_bar_T) (no network Jacobian).
    """
    if gradient not in GRADIENTS:
        raise ValueError(f"unknown DeqIR gradient {gradient!r}; gradients: {GRADIENTS}")
    if phantom_steps < 1 or not 0 < phantom_tau <= 1:
        raise ValueError(f"need phantom_steps >= 1 and 0 < phantom_tau <= 1, got {phantom_steps} and {phantom_tau}")
    fixed = x_T.detach()
    with torch.no_grad():
        start = z0 if z0 is not None else fixed.unsqueeze(0).expand(chain.steps, *fixed.shape).contiguous()
        z_star = solve(lambda z: chain.joint(z, fixed), start, None, None)
    if gradient == "phantom":
        z, first = z_star, fixed
        for _ in range(phantom_steps):
            z, first = ((1 - phantom_tau) * z + phantom_tau * chain.joint(z, x_T, first),
                        (1 - phantom_tau) * first + phantom_tau * x_T)
        return z[-1], z_star
    leaf = z_star.clone().requires_grad_(torch.is_grad_enabled())
    fz = chain.joint(leaf, x_T)
    if fz.requires_grad:
        def adjoint(v: Tensor) -> Tensor:
            hook.remove()  # the vector-Jacobian products below start at fz: they must not re-enter this hook
            return solve(lambda g: torch.autograd.grad(fz, leaf, g, retain_graph=True)[0] + v, v, adjoint_tol,
                         adjoint_max_iter)

        hook = fz.register_hook(adjoint)
    return fz[-1], z_star


def anderson_solver(history: int, max_iter: int, tol: float, lam: float, beta: float
                    ) -> Callable[[Callable[[Tensor], Tensor], Tensor, float | None, int | None], Tensor]:
    """`solve(f, start, tol, max_iter)` for `equilibrium_output`: `anderson` with these settings (tol and
    max_iter as given when they are None)."""
    def solve(f: Callable[[Tensor], Tensor], start: Tensor, tol_: float | None = None,
              max_iter_: int | None = None) -> Tensor:
        return anderson(f, start, history, max_iter if max_iter_ is None else max_iter_, lam, beta,
                        tol if tol_ is None else tol_)
    return solve
