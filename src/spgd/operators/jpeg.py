"""JPEG compression as a forward model: y = the decoded JPEG of x, with the file's own quantisation tables.

The measurement is an image (what a person has: the decoded file), so the decode is the pseudo-inverse
(A^+ y = y, DDRM-JPEG's and PiGDM's choice) and `with_measured` puts a result back inside the quantisation
cells of y's coefficients (JPEG's measurement set). Two coders:
- `measure` (simulating a file) runs libjpeg's integer encoder (`spgd.operators.jpeg_codec`, bit-exact with
  the files Pillow writes) on the 8-bit image, then decodes;
- `A`, which the samplers differentiate, runs the same steps in floats: JFIF's YCbCr, 2x2 chroma means for
  4:2:0, edges replicated to whole blocks, the orthonormal 8x8 DCT (libjpeg's islow DCT is 8x it), division by
  the tables, rounding, and the decode: dequantisation, inverse DCT, chroma upsampled by libjpeg's triangle
  ("fancy") filter, back to RGB. Rounding has no useful derivative, so A's rounding is a surrogate
  (`rounding`): "straight_through" (the exact rounded value, the derivative of the identity: the data fit's
  gradient is that of the unquantised codec, as PiGDM's detached residual) or "cubic" (round(c) + (c -
  round(c))^3, Shin & Song 2017, a value within 1/8 of a step of the rounded one).
Tables: `quality` (IJG scaling of the standard tables, 1-100) or `tables` ([luma] or [luma, chroma], 64
values each in natural row-major order, as Pillow's `quantization` gives them); `subsampling` "4:2:0",
"4:4:4" or "gray" (one component: the result is grey). `quality_range` (low, high): `measure` codes each
image at its own quality, drawn uniformly from the range with the image's generator (pairs for a restorer
blind to the quality); the rest of the operator keeps `quality`.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Operator, as_generators
from .jpeg_codec import encode, ijg_tables

SUBSAMPLINGS = ("4:2:0", "4:4:4", "gray")
PROJECTIONS = 10  # alternations of `with_measured`
ROUNDINGS = ("straight_through", "cubic")
RGB_TO_YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                          dtype=torch.float64)
YCC_TO_RGB = torch.linalg.inv(RGB_TO_YCC)


def _dct_matrix() -> Tensor:
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d


DCT = _dct_matrix()  # orthonormal: coefficients = DCT @ block @ DCT.T


def _blocks_up(n: int) -> int:
    return -(-n // 8)


class Jpeg(Operator):
    """y = decode(round(encode(x) / Q)) Q), the JPEG round trip of x (see the module)."""

    name = "jpeg"
    linear = False
    image_measurement = True
    measured_parameters = ("quality", "subsampling")  # a measured .jpg brings its own tables and sampling

    def __init__(self, quality: int | None = None, tables: Sequence[Sequence[int]] | None = None,
                 subsampling: str = "4:2:0", rounding: str = "straight_through", noise_sigma: float = 0.0,
                 quality_range: Sequence[int] | None = None) -> None:
        super().__init__(noise_sigma)
        if quality_range is not None:
            quality_range = [int(q) for q in quality_range]
            if len(quality_range) != 2 or not 1 <= quality_range[0] <= quality_range[1] <= 100:
                raise ValueError(f"jpeg: quality_range must be [low, high] within 1-100, got {quality_range}")
        self.quality_range = quality_range
        if subsampling not in SUBSAMPLINGS:
            raise ValueError(f"jpeg: subsampling must be one of {', '.join(SUBSAMPLINGS)}, got {subsampling!r}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"jpeg: rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
        if tables is None and quality is not None:
            if not 1 <= int(quality) <= 100:
                raise ValueError(f"jpeg: quality must be 1-100 (or give the file's tables), got {quality}")
            tables = [t.reshape(-1).tolist() for t in ijg_tables(int(quality))]
        if tables is not None:
            tables = [[int(v) for v in t] for t in tables]
            if not 1 <= len(tables) <= 2 or any(len(t) != 64 or min(t) < 1 for t in tables):
                raise ValueError("jpeg: tables are one or two lists of 64 positive integers (luma, chroma)")
        self.quality, self.tables, self.subsampling, self.rounding = quality, tables, subsampling, rounding

    def draw(self, x: Tensor, generators: Sequence[torch.Generator | None]) -> None:
        if self.tables is None:
            raise ValueError("jpeg: give the quality to simulate a JPEG file (--op quality=Q)")

    def fit_to_measurement(self, y: Tensor, files: Sequence[Any] | None = None) -> dict[str, Any]:
        """A measured .jpg's own quantisation tables and chroma subsampling (Pillow reads them), when no quality
        was given; its IJG quality where the tables are IJG's. Files of one batch must share them."""
        if self.tables is not None:
            return {}
        found = [read_jpeg_coding(path) for path in files or []]
        if not found:
            raise ValueError("jpeg: a measured image needs its JPEG file (its tables) or --op quality=Q")
        if any(f != found[0] for f in found[1:]):
            raise ValueError(f"jpeg: {files[0]} and the other files of its batch were coded with other tables; "
                             "restore them with --batch-size 1")
        self.tables, self.subsampling = found[0]["tables"], found[0]["subsampling"]
        self.quality = next((q for q in range(1, 101) if [t.reshape(-1).tolist() for t in ijg_tables(q)][
            :len(self.tables)] == self.tables), None)
        return {"quality": self.quality if self.quality is not None else "not IJG's (the file's own tables)",
                "subsampling": self.subsampling, "tables": "read from the file"}

    def _table(self, component: int, like: Tensor) -> Tensor:
        if self.tables is None:
            raise ValueError("jpeg: the quantisation tables are not known yet (a measured .jpg brings them)")
        table = self.tables[min(component, len(self.tables) - 1)]
        return torch.tensor(table, dtype=like.dtype, device=like.device).reshape(8, 8)

    def _planes(self, x: Tensor) -> list[Tensor]:
        """The components (N x h x w, 8-bit scale, level-shifted by 128) of [-1, 1] images, chroma subsampled."""
        rgb = (x + 1) * 127.5
        ycc = torch.einsum("kc,nchw->nkhw", RGB_TO_YCC.to(x), rgb)
        planes = [ycc[:, 0] - 128]
        if self.subsampling == "gray":
            return planes
        for chroma in (ycc[:, 1], ycc[:, 2]):
            if self.subsampling == "4:2:0":
                h, w = chroma.shape[-2:]
                chroma = F.pad(chroma[:, None], (0, w % 2, 0, h % 2), mode="replicate")[:, 0]
                chroma = F.avg_pool2d(chroma[:, None], 2)[:, 0]
            planes.append(chroma)  # the matrix gives Cb - 128 and Cr - 128: already level-shifted
        return planes

    @staticmethod
    def _to_blocks(plane: Tensor) -> tuple[Tensor, tuple[int, int]]:
        h, w = plane.shape[-2:]
        ph, pw = 8 * _blocks_up(h) - h, 8 * _blocks_up(w) - w
        padded = F.pad(plane[:, None], (0, pw, 0, ph), mode="replicate")[:, 0] if ph or pw else plane
        n, hh, ww = padded.shape
        return padded.reshape(n, hh // 8, 8, ww // 8, 8).transpose(2, 3), (h, w)

    @staticmethod
    def _from_blocks(blocks: Tensor, size: tuple[int, int]) -> Tensor:
        n, bh, bw = blocks.shape[:3]
        return blocks.transpose(2, 3).reshape(n, bh * 8, bw * 8)[:, : size[0], : size[1]]

    def coefficients(self, x: Tensor) -> list[Tensor]:
        """The DCT coefficients of each component of [-1, 1] images, in units of their quantisation step."""
        out = []
        for k, plane in enumerate(self._planes(x)):
            blocks, _ = self._to_blocks(plane)
            d = DCT.to(blocks)
            out.append(d @ blocks @ d.T / self._table(k, blocks))
        return out

    def _round(self, c: Tensor) -> Tensor:
        r = torch.round(c).detach()
        return c + (r - c).detach() if self.rounding == "straight_through" else r + (c - r) ** 3

    def decode(self, coefficients: Sequence[Tensor], shape: Sequence[int], as_a_file: bool = False) -> Tensor:
        """[-1, 1] images of `shape` (N x 3 x H x W) from each component's coefficients (in step units);
        `as_a_file`: each component's samples rounded and clamped to 0-255 after the inverse DCT, as a decoder
        stores them."""
        height, width = shape[-2:]
        planes = []
        for k, c in enumerate(coefficients):
            d = DCT.to(c)
            size = (height, width) if k == 0 or self.subsampling == "4:4:4" else (-(-height // 2), -(-width // 2))
            plane = self._from_blocks(d.T @ (c * self._table(k, c)) @ d, size) + 128
            if as_a_file:
                plane = plane.round().clamp(0, 255)
            planes.append(plane if plane.shape[-2:] == (height, width) else _fancy_upsample(plane)[:, :height, :width])
        if len(planes) == 1:
            return (planes[0][:, None].expand(-1, 3, -1, -1) / 127.5 - 1).contiguous()
        ycc = torch.stack([planes[0], planes[1] - 128, planes[2] - 128], dim=1)
        return torch.einsum("ck,nkhw->nchw", YCC_TO_RGB.to(ycc), ycc) / 127.5 - 1

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return self.decode([self._round(c) for c in self.coefficients(x)], x.shape)

    def A_pinv(self, y: Tensor) -> Tensor:  # noqa: N802
        """The decoded file is its own pseudo-inverse (DDRM-JPEG, PiGDM)."""
        return y

    def measure(self, x: Tensor, generator: Any = None) -> Tensor:
        """The decoded JPEG file of 8-bit x, coded exactly as libjpeg codes it, plus any noise."""
        if self.quality_range is not None:
            generators = as_generators(generator, x.shape[0])
            low, high = self.quality_range
            qualities = [int(torch.randint(low, high + 1, (), generator=g)) for g in generators]
            return torch.cat([Jpeg(q, subsampling=self.subsampling, noise_sigma=self.noise_sigma).measure(image[None], g)
                              for image, q, g in zip(x, qualities, generators)])
        pixels = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()
        if self.tables is None:
            raise ValueError("jpeg: give the quality to simulate a JPEG file (--op quality=Q)")
        tables = [np.array(t).reshape(8, 8) for t in (self.tables if len(self.tables) == 2 else self.tables * 2)]
        coded = [encode(image.numpy(), tables[0], tables[1], self.subsampling) for image in pixels]
        coefficients = [torch.from_numpy(np.stack([c[k] for c in coded])).to(x.device, torch.float64)
                        for k in range(len(coded[0]))]
        decoded = self.decode(coefficients, x.shape, as_a_file=True).clamp(-1, 1)
        y = (((decoded + 1) * 127.5).round() / 127.5 - 1).to(x.dtype)  # 8-bit pixels, as the file decodes
        return self.noise(y, as_generators(generator, y.shape[0]))  # noise on the decoded file, not a second coding

    def with_measured(self, x: Tensor, y: Tensor) -> Tensor:
        """x moved into the quantisation cells of y's coefficients (JPEG's measurement set): each coefficient
        clamped to within half a step of y's rounded one, the change decoded and added, `PROJECTIONS` times (one
        suffices for 4:4:4 on whole blocks; 4:2:0's chroma means and the replicated edges of partial blocks
        couple the cells, and the alternation converges to them: within 0.52 of a step after 10 on 96x96)."""
        x, cells = x.double(), [torch.round(t) for t in self.coefficients(y.double())]
        for _ in range(PROJECTIONS):
            moved = [c.clamp(t - 0.5, t + 0.5) - c for c, t in zip(self.coefficients(x), cells)]
            zero = self.decode([torch.zeros_like(c) for c in moved], x.shape)  # the decode of no change
            x = x + self.decode(moved, x.shape) - zero
        return x.to(y.dtype)

    def params(self) -> dict[str, Any]:
        return {"name": self.name, "quality": self.quality, "tables": self.tables, "subsampling": self.subsampling,
                "rounding": self.rounding, "noise_sigma": self.noise_sigma, "quality_range": self.quality_range}


def read_jpeg_coding(path: Any) -> dict[str, Any]:
    """{"tables": [luma(, chroma)], "subsampling"} of a JPEG file as Pillow reads them (natural order); a file
    that is no baseline 4:2:0, 4:4:4 or greyscale JPEG is a ValueError naming it."""
    from PIL import Image, JpegImagePlugin

    with Image.open(path) as image:
        if image.format != "JPEG":
            raise ValueError(f"{path}: not a JPEG file ({image.format}): give the quality it was coded with "
                             "(--op quality=Q) or restore the .jpg itself")
        tables = [list(image.quantization[k]) for k in sorted(image.quantization)][:2]
        if image.mode == "L":
            return {"tables": tables[:1], "subsampling": "gray"}
        sampling = {0: "4:4:4", 2: "4:2:0"}.get(JpegImagePlugin.get_sampling(image))
        if sampling is None or image.mode != "RGB":
            raise ValueError(f"{path}: a {image.mode} JPEG with chroma sampling {image.layer}: spgd restores "
                             "4:2:0, 4:4:4 and greyscale JPEG files")
        return {"tables": tables, "subsampling": sampling}


def _fancy_upsample(plane: Tensor) -> Tensor:
    """libjpeg's 2x2 'fancy' upsampling: each output sample 3/4 of its nearest input and 1/4 of the next nearest
    along each axis (9/16, 3/16, 3/16, 1/16), edges replicated."""
    def axis(p: Tensor, dim: int) -> Tensor:
        dim, n = dim % p.dim(), p.shape[dim]
        prev = torch.cat([p.narrow(dim, 0, 1), p.narrow(dim, 0, n - 1)], dim)
        nxt = torch.cat([p.narrow(dim, 1, n - 1), p.narrow(dim, n - 1, 1)], dim)
        even, odd = 0.75 * p + 0.25 * prev, 0.75 * p + 0.25 * nxt
        return torch.stack([even, odd], dim + 1).flatten(dim, dim + 1)

    return axis(axis(plane, -2), -1)
