"""The contracts the rooms meet at.

- `Denoiser`: a prior, D(x, sigma). Samplers are written against it alone.
- `Operator`: the physics y = A(x) + noise, with its `NoiseModel`, and the answers samplers ask of it (adjoint,
  pseudo-inverse, SVD). Samplers import neither `priors` nor `operators`.
- `Acquisition`: what the apps ask of an operator about files and people (a preview, a measurement read from
  a file, the parameter files a task takes, pixels left out). The apps are typed against it, never probe.
- `Restorer`: what turns a measurement into an image: a diffusion prior with a sampler and its settings, or a
  trained restorer (DiffIR). The apps hold one and never ask which kind.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Denoiser(Protocol):
    """D(x, sigma) ~ E[x0 | x0 + sigma n = x] for images in [-1, 1], and the noise levels it knows.

    `sigma_min`/`sigma_max`: the range continuous samplers clamp their levels to. `ladder`: the
    ascending discrete levels (float64) DDPM-chain samplers walk: the training ladder of a discrete
    prior, a standard 1,000-level one for a continuous prior. Optional: `tile_denoiser`, (a fixed-size
    denoiser, its side) where this one runs that on tiles, for samplers with a tiling of their own;
    `for_seeds(seeds)`, the denoiser for a run of images with these seeds, where it draws at random itself
    (random-shift tiles); a posterior `Restorer` calls it before each run, so no sampler needs to.
    """

    image_channels: int
    sigma_min: float
    sigma_max: float

    @property
    def image_size(self) -> int | None: ...

    @property
    def ladder(self) -> Tensor: ...

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor: ...


class SVD(Protocol):
    """A = U diag(s) V^T, with spectral coefficients shaped like the image batch.

    `V_adjoint(x)`/`V(c)` map images to coefficients and back, `U_adjoint(y)`/`U(c)` measurements
    (coefficients without a measurement counterpart are 0); `s` broadcasts against the coefficients
    and is 0 on A's null space. So A x = U(s * V_adjoint(x)); U and V are orthogonal. The
    coefficients of U_adjoint(y) where s = 0 are the part of y outside A's range: use them only
    multiplied by s. Noise in coefficient space is V_adjoint of image-space noise.
    """

    s: Tensor

    def V_adjoint(self, x: Tensor) -> Tensor: ...  # noqa: N802

    def V(self, c: Tensor) -> Tensor: ...  # noqa: N802

    def U_adjoint(self, y: Tensor) -> Tensor: ...  # noqa: N802

    def U(self, c: Tensor) -> Tensor: ...  # noqa: N802


class NoiseModel(Protocol):
    """What is added to A(x): `sigma` is the level samplers weigh the data fit by ([-1, 1] units); calling it
    on z = A(x) adds the noise, image i's draws from generators[i]."""

    name: str
    sigma: float

    def __call__(self, z: Tensor, generators: Sequence[torch.Generator | None]) -> Tensor: ...


@runtime_checkable
class Operator(Protocol):
    """The physics: a forward model y = A(x) + noise that answers its own questions.

    `supports(name)` says which optional answers it has: "adjoint" (A_adjoint), "pinv" (A_pinv and
    `null`), "svd" (`svd(shape, device, dtype)`, an `SVD` for image batches of that shape) and "refit", for
    blind methods (`start_estimate(y)`: where an estimate of the parameters a measurement does not tell starts;
    `refit(x, y)`: the M-step, those parameters re-estimated from an image estimate x, kept and returned one per
    image; `forget_refitted()`: a simulated truth dropped so no restorer runs with it).
    `input_shape(y)` is the image batch shape behind a measurement. `noise` is the noise model `measure`
    applies; `noise_sigma` its level.
    """

    name: str
    linear: bool
    noise: NoiseModel
    noise_sigma: float

    def A(self, x: Tensor) -> Tensor: ...  # noqa: N802 - the field's notation

    def A_adjoint(self, y: Tensor) -> Tensor: ...  # noqa: N802

    def A_pinv(self, y: Tensor) -> Tensor: ...  # noqa: N802

    def null(self, x: Tensor) -> Tensor: ...

    def svd(self, shape: Sequence[int], device: torch.device | str | None = None,
            dtype: torch.dtype = torch.float32) -> SVD: ...

    def supports(self, capability: str) -> bool: ...

    def start_estimate(self, y: Tensor) -> None: ...

    def refit(self, x: Tensor, y: Tensor) -> dict[str, Tensor]: ...

    def forget_refitted(self) -> None: ...

    def input_shape(self, y: Tensor) -> tuple[int, ...]: ...

    def measure(self, x: Tensor, generator: Sequence[torch.Generator] | torch.Generator | None = None) -> Tensor: ...


@runtime_checkable
class Acquisition(Protocol):
    """The questions the apps (command line, page, bench) ask of an operator about files and people.

    `image_measurement`: a measurement is an image a person can bring as a file (`as_measurement` makes
    it y). `measurement_shape(image_shape)` is the inverse of `input_shape`. `file_parameters`: the
    parameters a person can give as files ("mask", "kernel"). `unset_parameters()`: those a real
    measurement must come with (drawn at random when simulating). `measured_parameters`: those a
    measurement tells (estimated from it unless given); `assumed_parameters`: those it cannot tell and a
    preset only assumes (one of them, or a file parameter, must be given with a measured input). `takes_unknown_pixels` /
    `mark_unknown(unknown)`: it can leave any pixel out (a transparent one). `with_measured(x, y)`: x with
    the entries y measures directly put back, or None. `preview(y)`: the [0, 1] picture of a measurement.
    """

    image_measurement: bool
    file_parameters: tuple[str, ...]
    measured_parameters: tuple[str, ...]
    assumed_parameters: tuple[str, ...]
    takes_unknown_pixels: bool

    def measurement_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]: ...

    def as_measurement(self, image: Tensor) -> Tensor: ...

    def unset_parameters(self) -> list[str]: ...

    def mark_unknown(self, unknown: Tensor) -> None: ...

    def with_measured(self, x: Tensor, y: Tensor) -> Tensor | None: ...

    def preview(self, y: Tensor) -> Tensor: ...

    def draw(self, x: Tensor, generators: Sequence[torch.Generator | None]) -> None: ...

    def params(self) -> dict[str, Any]: ...


class Stopped(Exception):
    """A restore ended by its stop callback at `step`: nothing of it is a result."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped at step {step}")
        self.step = step


@runtime_checkable
class Restorer(Protocol):
    """Measurements in, images out: what the apps run, whatever is inside.

    `image_channels`: the channels of the images it restores; `image_size`: the one clean side it is made
    for (what `--resize` brings images to), None for any size. `check(operator)` raises a ValueError naming
    both when it cannot restore that operator's measurements. `describe()`: its resolved settings as plain
    values (config.yaml). `restore(operator, y, seeds)` returns images in [-1, 1], image i seeded by seeds[i];
    with on_nan="mark" a failed image comes back NaN and `trace.failed`/`trace.reasons` say why; `stop()`
    is asked at every step and, once true, ends the run by raising `Stopped`. `progress`: bars of its own
    (True), none (False), or the job's one bar (`spgd.progress.JobProgress`) to tick; `kept_runs`: where the
    finished runs of a mean of runs are kept across an interruption (`spgd.samplers.mean_of_runs`).
    """

    name: str
    description: str
    image_channels: int
    image_size: int | None

    def check(self, operator: Operator) -> None: ...

    def describe(self) -> dict[str, Any]: ...

    def restore(self, operator: Operator, y: Tensor, seeds: Sequence[int], *, x_start: Tensor | None = None,
                trace: Any = None, progress: Any = True, on_nan: str | None = None,
                stop: Callable[[], bool] | None = None, kept_runs: Any = None) -> Tensor: ...
