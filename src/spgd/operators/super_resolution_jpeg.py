"""4x super-resolution of a JPEG file: y = the decoded JPEG of the low-resolution image, one operator chain.

What a real low-resolution file is: an image downscaled (antialiased bicubic, `SuperResolution`) and then coded
as a JPEG (`Jpeg`: libjpeg's coder when simulating, its float twin with a rounding surrogate for the samplers'
gradients). A measured .jpg brings its quantisation tables and chroma subsampling (`fit_to_measurement`, as
`-t jpeg`). The pseudo-inverse is the resize's of the decoded file (the decode is the JPEG's own, as for `-t
jpeg`); there is no SVD (the chain is not linear), so the spectral samplers (DDRM, DDNM+, DiffPIR) refuse it and
the gradient samplers (SPGD, DPS, DAPS, ...) and DDNM's range-null step run it.
"""
from __future__ import annotations

from typing import Any, Sequence


from torch import Tensor

from .base import Operator, as_generators
from .jpeg import Jpeg
from .super_resolution import SuperResolution


class SuperResolutionJpeg(Operator):
    """y = jpeg(downscale(x)): `scale` and `filter` of the resize, `quality` / `tables` / `subsampling` /
    `rounding` of the JPEG (`spgd.operators.jpeg`), `noise_sigma` added to the decoded file."""

    name = "super_resolution_jpeg"
    linear = False
    image_measurement = True
    measured_parameters = ("quality", "subsampling")  # a measured .jpg brings its own tables and sampling

    def __init__(self, scale: int = 4, quality: int | None = None, tables: Sequence[Sequence[int]] | None = None,
                 subsampling: str = "4:2:0", rounding: str = "straight_through", noise_sigma: float = 0.0,
                 filter: str = "bicubic") -> None:  # noqa: A002
        super().__init__(noise_sigma)
        self.resize = SuperResolution(scale=scale, filter=filter)
        self.jpeg = Jpeg(quality=quality, tables=tables, subsampling=subsampling, rounding=rounding)

    @property
    def scale(self) -> int:
        return self.resize.scale

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return self.jpeg.A(self.resize.A(x))

    def A_pinv(self, y: Tensor) -> Tensor:  # noqa: N802
        """The resize's pseudo-inverse of the decoded file (the decode is the JPEG's own pseudo-inverse)."""
        return self.resize.A_pinv(self.jpeg.A_pinv(y))

    def measure(self, x: Tensor, generator: Any = None) -> Tensor:
        """The decoded JPEG file (libjpeg's coder) of the downscaled 8-bit image, plus any noise."""
        generators = as_generators(generator, x.shape[0])
        return self.noise(self.jpeg.measure(self.resize.A(x)), generators)

    def fit_to_measurement(self, y: Tensor, files: Sequence[Any] | None = None) -> dict[str, Any]:
        return self.jpeg.fit_to_measurement(y, files)

    def input_shape(self, y: Tensor) -> tuple[int, ...]:
        return self.resize.input_shape(y)

    def measurement_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        return self.resize.measurement_shape(image_shape)

    def to(self, *args: Any, **kwargs: Any) -> "SuperResolutionJpeg":
        super().to(*args, **kwargs)
        self.resize.to(*args, **kwargs)
        return self

    def params(self) -> dict[str, Any]:
        jpeg = self.jpeg.params()
        return {"name": self.name, "scale": self.scale, "filter": self.resize.filter,
                **{key: jpeg[key] for key in ("quality", "tables", "subsampling", "rounding")},
                "noise_sigma": self.noise_sigma}


__all__ = ["SuperResolutionJpeg"]

