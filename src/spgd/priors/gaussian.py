"""An exact test prior: Gaussian images whose covariance is diagonal in the orthonormal 2-D DCT basis.

x ~ N(mean, Sigma), Sigma = C^T diag(v) C per channel (C the orthonormal 2-D DCT-II), with
variances decaying with frequency, v_uv proportional to (1 + (u^2 + v^2) / corner^2)^(-power) and
scaled so that the average pixel variance is pixel_std^2. Then both the denoiser

    D(x, sigma) = mean + Sigma (Sigma + sigma^2 I)^-1 (x - mean)

and, for a linear operator with Gaussian noise, the posterior are known in closed form: samplers
can be checked against the exact answer (`posterior`) instead of against pictures.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from ..schedule import linear_ladder


def dct_matrix(n: int, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> Tensor:
    """The orthonormal n x n DCT-II matrix (rows are frequencies)."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    c = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    c[0] /= math.sqrt(2)
    return c.to(dtype=dtype, device=device)


class GaussianPrior:
    """N(mean, Sigma) on channels x image_size x image_size images; `denoise` is exact (see the module docstring).

    Exact at every sigma; `ladder` (the levels DDPM-chain samplers walk) is the standard linear one
    unless another is given, e.g. to check that samplers follow the prior's ladder.
    """

    sigma_min = 0.0

    def __init__(self, image_size: int, channels: int = 1, pixel_std: float = 0.4, corner: float = 2.0,
                 power: float = 2.0, mean: float | Tensor = 0.0, ladder: Tensor | None = None) -> None:
        self.image_size, self.channels = int(image_size), int(channels)
        self.image_channels = self.channels
        self.ladder = (linear_ladder() if ladder is None else ladder).double()
        self.sigma_max = float(self.ladder[-1])
        self.device = torch.device("cpu")
        u = torch.arange(self.image_size, dtype=torch.float64)
        profile = (1 + (u[:, None] ** 2 + u[None, :] ** 2) / corner ** 2) ** (-power)
        self.variances = profile * pixel_std ** 2 / profile.mean()
        mean = torch.as_tensor(mean, dtype=torch.float64)
        self.mean = mean.expand(self.channels, self.image_size, self.image_size).clone()

    def _dct(self, x: Tensor) -> Tensor:
        c = dct_matrix(self.image_size, x.dtype, x.device)
        return c @ x @ c.T

    def _idct(self, coefficients: Tensor) -> Tensor:
        c = dct_matrix(self.image_size, coefficients.dtype, coefficients.device)
        return c.T @ coefficients @ c

    def _like(self, t: Tensor, x: Tensor) -> Tensor:
        return t.to(dtype=x.dtype, device=x.device)

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """E[x0 | x0 + sigma * noise = x], sigma a float or one value per image."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        if sigma.numel() not in (1, x.shape[0]):
            raise ValueError(f"got {sigma.numel()} sigmas for a batch of {x.shape[0]} images")
        v = self._like(self.variances, x)
        gain = v / (v + sigma.reshape(-1, 1, 1, 1) ** 2)
        mean = self._like(self.mean, x)
        return mean + self._idct(gain * self._dct(x - mean))

    def covariance_apply(self, x: Tensor) -> Tensor:
        """Sigma x for a batch of images x."""
        return self._idct(self._like(self.variances, x) * self._dct(x))

    def sample(self, generators: Sequence[torch.Generator]) -> Tensor:
        """One prior draw per generator (float32 batch)."""
        shape = (self.channels, self.image_size, self.image_size)
        z = torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in generators])
        return (self.mean + self._idct(self.variances.sqrt() * z)).float()

    def posterior(self, operator, y: Tensor) -> tuple[Tensor, Tensor]:
        """Exact posterior mean and marginal standard deviation per pixel (each shaped like x) given y.

        Needs a linear operator with Gaussian noise of std `operator.noise_sigma`; A is made dense
        by applying it to every basis image, so this is for small images (up to about 3x16x16).
        """
        if not getattr(operator, "linear", False):
            raise ValueError(f"the exact posterior needs a linear operator, not {operator.name}")
        batch = y.shape[0]
        shape = (self.channels, self.image_size, self.image_size)
        n = math.prod(shape)
        basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
        sigma_dense = self.covariance_apply(basis).reshape(n, n)
        with torch.no_grad():
            columns = [operator.A(basis[j].expand(batch, *shape)).reshape(batch, -1).cpu() for j in range(n)]
        a = torch.stack(columns, dim=2)  # batch x m x n
        y = y.double().reshape(batch, -1).cpu()
        mean = self.mean.reshape(-1)
        gain_rhs = a @ sigma_dense  # A Sigma
        k = gain_rhs @ a.transpose(1, 2) + operator.noise_sigma ** 2 * torch.eye(a.shape[1], dtype=torch.float64)
        # K = A Sigma A^T + s^2 I is symmetric positive definite: a Cholesky solve is exact and stable
        solved = torch.cholesky_solve(torch.cat([(y - a @ mean)[..., None], gain_rhs], dim=2),
                                      torch.linalg.cholesky(k))
        post_mean = mean + (gain_rhs.transpose(1, 2) @ solved[..., :1])[..., 0]
        post_var = sigma_dense.diagonal() - (gain_rhs * solved[..., 1:]).sum(dim=1)
        return post_mean.reshape(batch, *shape), post_var.clamp_min(0).sqrt().reshape(batch, *shape)


class LowRankGaussian:
    """N(mean, Sigma) with Sigma = U diag(lam) U^T + delta I: principal components plus isotropic rest.

    Fitted to aligned faces (`fit`), it is the strongest classical prior for them: its posterior mean
    under a linear operator with Gaussian noise is exact (`posterior_mean`, conjugate gradients in the
    measurement space), and it is a prior D(x, sigma) like any other (`denoise`, closed form), so
    samplers can run on it too. Images are flattened C*H*W vectors in [-1, 1]; `mean` and `basis` live
    on the CPU in float32 and follow the input's device when used.
    """

    def __init__(self, mean: Tensor, basis: Tensor, variances: Tensor, delta: float, ladder: Tensor | None = None) -> None:
        self.shape = tuple(mean.shape)
        self.mean, self.basis = mean.reshape(-1).float(), basis.float()  # basis: d x k, orthonormal columns
        self.variances, self.delta = variances.float(), float(delta)
        self.image_channels, self.image_size = self.shape[0], self.shape[-1]
        self.ladder = (linear_ladder() if ladder is None else ladder).double()
        self.sigma_min, self.sigma_max = 0.0, float(self.ladder[-1])
        self.device = torch.device("cpu")

    @classmethod
    def fit(cls, images: Tensor, components: int = 256, seed: int = 0) -> "LowRankGaussian":
        """Mean and the top `components` principal components of NCHW images in [-1, 1] (with their
        horizontal mirror images, as training augments); delta is the variance left per dimension."""
        data = torch.cat([images, images.flip(-1)]).flatten(1).float()
        mean = data.mean(dim=0)
        centred = data - mean
        torch.manual_seed(seed)
        _, singular, v = torch.svd_lowrank(centred, q=components + 16, niter=4)
        variances = singular[:components] ** 2 / (len(data) - 1)
        total = centred.pow(2).sum() / (len(data) - 1)
        delta = float((total - variances.sum()) / (centred.shape[1] - components))
        return cls(mean.reshape(images.shape[1:]), v[:, :components], variances, max(delta, 1e-8))

    def state_dict(self) -> dict[str, Tensor]:
        return {"mean": self.mean.reshape(self.shape), "basis": self.basis, "variances": self.variances,
                "delta": torch.tensor(self.delta)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> "LowRankGaussian":
        return cls(state["mean"], state["basis"], state["variances"], float(state["delta"]))

    def _on(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return (self.mean.to(x.device, x.dtype), self.basis.to(x.device, x.dtype), self.variances.to(x.device, x.dtype))

    def covariance_apply(self, x: Tensor) -> Tensor:
        """Sigma x for a batch of images x."""
        _, basis, lam = self._on(x)
        flat = x.flatten(1)
        return ((flat @ basis) * lam @ basis.T + self.delta * flat).reshape(x.shape)

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """E[x0 | x0 + sigma n = x] = mean + Sigma (Sigma + sigma^2 I)^-1 (x - mean), per component."""
        mean, basis, lam = self._on(x)
        s2 = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1) ** 2
        r = x.flatten(1) - mean
        coef = r @ basis
        rest = r - coef @ basis.T
        full = lam + self.delta  # the variance along a component: its own plus the isotropic rest
        out = mean + (coef * full / (full + s2)) @ basis.T + rest * (self.delta / (self.delta + s2))
        return out.reshape(x.shape)

    def sample(self, generators) -> Tensor:
        """One draw per generator."""
        d, k = self.basis.shape
        z = torch.stack([torch.randn(k, generator=g) for g in generators])
        e = torch.stack([torch.randn(d, generator=g) for g in generators])
        out = self.mean + (z * self.variances.sqrt()) @ self.basis.T + e * self.delta ** 0.5
        return out.reshape(-1, *self.shape)

    @torch.no_grad()
    def posterior_mean(self, y: Tensor, operator, iterations: int = 500, tol: float = 1e-6) -> Tensor:
        """The exact posterior mean for y = A x + n, n ~ N(0, noise_sigma^2 I), A linear (float64 CG).

        x = mean + Sigma A^T w with (A Sigma A^T + s^2 I) w = y - A mean, solved per image by conjugate
        gradients (the matrix is symmetric positive definite); stops at relative residual `tol`.
        """
        if not operator.linear:
            raise ValueError(f"the exact Gaussian posterior needs a linear operator, not {operator.name}")
        y = y.double()
        mean = self.mean.to(y.device, torch.float64).reshape(1, *self.shape).expand(len(y), *self.shape)
        noise = max(operator.noise_sigma, 1e-3) ** 2

        def matvec(v: Tensor) -> Tensor:
            return operator.A(self.covariance_apply(operator.A_adjoint(v))) + noise * v

        rhs = y - operator.A(mean)
        w = torch.zeros_like(rhs)
        r = rhs.clone()
        p = r.clone()
        rr = r.flatten(1).pow(2).sum(1)
        target = tol ** 2 * rhs.flatten(1).pow(2).sum(1)
        for _ in range(iterations):
            ap = matvec(p)
            alpha = rr / (p * ap).flatten(1).sum(1)
            w = w + alpha.reshape(-1, 1, 1, 1) * p
            r = r - alpha.reshape(-1, 1, 1, 1) * ap
            rr_new = r.flatten(1).pow(2).sum(1)
            if bool((rr_new <= target).all()):
                break
            p = r + (rr_new / rr).reshape(-1, 1, 1, 1) * p
            rr = rr_new
        return (mean + self.covariance_apply(operator.A_adjoint(w))).float()
