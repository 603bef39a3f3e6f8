"""Singular value decompositions A = U diag(s) V^T of the linear operators that have one.

Spectral coefficients are shaped like the image batch (B x C x H x W): `V_adjoint(x)` maps images to
coefficients, `V(c)` back; `U_adjoint(y)` maps a measurement to coefficients shaped like the images
(coordinates without a measurement counterpart are 0), `U(c)` back to a measurement. `s` is
broadcastable against the coefficients (B or 1, 1, H, W) and is 0 on A's null space, so

    A x = U(s * V_adjoint(x)),   A^T y = V(s * U_adjoint(y)),   A^+ y = V(where(s > 0, U_adjoint(y) / s, 0)).

U and V are real orthogonal maps (V square; U square on the measurement space, embedded in the
coefficient shape). Where s = 0 the coefficients of `U_adjoint(y)` hold the part of y outside A's
range (e.g. the noise in the holes of an inpainting measurement): samplers use them only through s.

Three kinds cover the operators here:
- `DiagonalSVD`: A = diag(s) itself (inpainting: s = mask, U = V = I);
- `SeparableSVD`: A(x) = Mh x Mw^T (super-resolution, separable blur) from the SVDs of Mh and Mw,
  s_jk = sh_j sw_k (zero-padded past the measurement's size);
- `FourierSVD`: circular correlation with transfer function T (circular blur): V is the real
  orthonormal Fourier basis (the real and imaginary parts of the unitary DFT, paired between
  frequencies f and -f), s = |T|, and U the same basis rotated by the phase of T.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor


class DiagonalSVD:
    """A x = s * x (U = V = I): inpainting's mask."""

    def __init__(self, s: Tensor) -> None:
        self.s = s

    def V_adjoint(self, x: Tensor) -> Tensor:  # noqa: N802 - the field's notation
        return x

    def V(self, c: Tensor) -> Tensor:  # noqa: N802
        return c

    def U_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return y

    def U(self, c: Tensor) -> Tensor:  # noqa: N802
        return c


def matrix_svd(matrix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Full SVD (U, s, V^T) of an m x n matrix (or a batch), m <= n, in float64."""
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=True)
    return u, s, vh


class SeparableSVD:
    """A(x) = Mh x Mw^T with Mh = Uh Sh Vh^T (m1 x n1), Mw = Uw Sw Vw^T (m2 x n2), m <= n.

    The factors are (optionally batched: B x 1 x m x n, one pair per image) float64 SVDs, cast to
    `device`/`dtype` once.
    """

    def __init__(self, rows: tuple[Tensor, Tensor, Tensor], cols: tuple[Tensor, Tensor, Tensor],
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        (uh, sh, vhh), (uw, sw, vhw) = rows, cols
        self.m1, self.n1 = uh.shape[-1], vhh.shape[-1]
        self.m2, self.n2 = uw.shape[-1], vhw.shape[-1]
        if self.m1 > self.n1 or self.m2 > self.n2:
            raise ValueError("SeparableSVD needs matrices with no more rows than columns")

        def cast(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype)

        self.uh, self.uw, self.vhh, self.vhw = cast(uh), cast(uw), cast(vhh), cast(vhw)
        pad_h = torch.zeros(*sh.shape[:-1], self.n1 - sh.shape[-1], dtype=sh.dtype)
        pad_w = torch.zeros(*sw.shape[:-1], self.n2 - sw.shape[-1], dtype=sw.dtype)
        s = torch.cat([sh, pad_h], -1)[..., :, None] * torch.cat([sw, pad_w], -1)[..., None, :]
        self.s = cast(s if s.dim() == 4 else s.reshape(1, 1, *s.shape[-2:]))

    def V_adjoint(self, x: Tensor) -> Tensor:  # noqa: N802
        return self.vhh @ x @ self.vhw.transpose(-1, -2)

    def V(self, c: Tensor) -> Tensor:  # noqa: N802
        return self.vhh.transpose(-1, -2) @ c @ self.vhw

    def U_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        small = self.uh.transpose(-1, -2) @ y @ self.uw
        return torch.nn.functional.pad(small, (0, self.n2 - self.m2, 0, self.n1 - self.m1))

    def U(self, c: Tensor) -> Tensor:  # noqa: N802
        return self.uh @ c[..., : self.m1, : self.m2] @ self.uw.transpose(-1, -2)


def _conjugate_pairs(height: int, width: int, device: torch.device | str | None) -> tuple[Tensor, Tensor]:
    """Masks of the frequencies that represent a conjugate pair (f < -f in flat order) and of the
    self-conjugate ones (f = -f)."""
    u = torch.arange(height, device=device)[:, None]
    v = torch.arange(width, device=device)[None, :]
    flat = u * width + v
    conjugate = ((-u) % height) * width + (-v) % width
    return flat < conjugate, flat == conjugate


def _conjugate_index(t: Tensor) -> Tensor:
    """t at the conjugate frequency: t'[u, v] = t[-u mod H, -v mod W]."""
    return torch.roll(torch.flip(t, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))


class FourierSVD:
    """Circular correlation with transfer function T (B or 1, 1, H, W, complex): A x = ifft2(T fft2(x)).

    V^T x: the unitary DFT X of x written in real coordinates, sqrt(2) Re X_f at the representative f
    of each pair {f, -f}, sqrt(2) Im X_f at -f (= -sqrt(2) Im X_{-f}), Re X_f where f = -f. |T| is
    the same at f and -f, so scaling these coordinates by s = |T| scales X by |T|; U then restores
    the phase of T.
    """

    def __init__(self, transfer: Tensor, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        transfer = transfer.to(device=device, dtype=torch.complex128)
        magnitude = transfer.abs()
        self.phase = torch.where(magnitude > 0, transfer / magnitude.clamp_min(1e-300), torch.ones_like(transfer))
        self.s = magnitude.to(dtype)
        self.representative, self.self_conjugate = _conjugate_pairs(*transfer.shape[-2:], device)
        self.dtype = dtype

    def _real(self, spectrum: Tensor) -> Tensor:
        c = torch.where(self.representative, math.sqrt(2) * spectrum.real,
                        torch.where(self.self_conjugate, spectrum.real, -math.sqrt(2) * spectrum.imag))
        return c.to(self.dtype)

    def _complex(self, c: Tensor) -> Tensor:
        c = c.double()
        flipped = _conjugate_index(c)
        return torch.where(self.representative, torch.complex(c, flipped) / math.sqrt(2),
                           torch.where(self.self_conjugate, torch.complex(c, torch.zeros_like(c)),
                                       torch.complex(flipped, -c) / math.sqrt(2)))

    def V_adjoint(self, x: Tensor) -> Tensor:  # noqa: N802
        return self._real(torch.fft.fft2(x.double(), norm="ortho"))

    def V(self, c: Tensor) -> Tensor:  # noqa: N802
        return torch.fft.ifft2(self._complex(c), norm="ortho").real.to(c.dtype)

    def U_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        return self._real(torch.fft.fft2(y.double(), norm="ortho") * self.phase.conj())

    def U(self, c: Tensor) -> Tensor:  # noqa: N802
        return torch.fft.ifft2(self._complex(c) * self.phase, norm="ortho").real.to(c.dtype)


def check_shape(shape: Sequence[int]) -> tuple[int, int, int, int]:
    """An image batch shape B x C x H x W."""
    if len(shape) != 4:
        raise ValueError(f"an SVD is built for an image batch shape B x C x H x W, got {tuple(shape)}")
    return tuple(int(n) for n in shape)  # type: ignore[return-value]
