"""JPEG's baseline coder as libjpeg-turbo computes it (the library Pillow writes JPEG files with), in integers.

`encode` gives the quantised DCT coefficients a file holds, bit for bit (tests/test_jpeg.py reads them back
from Pillow's files): RGB -> YCbCr in libjpeg's 16-bit fixed point (jccolor.c), 4:2:0 chroma as the 2x2 sums
with the alternating bias 1, 2 (jcsample.c), edges replicated to whole blocks (jcprepct.c, jcsample.c), the
'islow' integer DCT (jfdctint.c, LL&M, 13 constant bits, 2 pass-1 bits; its output is 8x the DCT), and
rounding to the nearest multiple of 8q, halves away from zero (jcdctmgr.c). `ijg_tables` scales the
standard tables by quality as jcparam.c does. The float, differentiable twin every sampler uses is
`spgd.operators.jpeg`.
"""
from __future__ import annotations

import numpy as np

# ITU-T T.81 Annex K tables (natural row-major order), the base of IJG quality scaling
LUMA = np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
                 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
                 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]).reshape(8, 8)
CHROMA = np.array([17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
                   47, 66, 99, 99, 99, 99, 99, 99, *[99] * 32]).reshape(8, 8)


def ijg_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    """The (luma, chroma) tables of IJG quality 1-100 (jcparam.c, baseline: entries in [1, 255])."""
    quality = min(100, max(1, int(quality)))
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(np.clip((base * scale + 50) // 100, 1, 255) for base in (LUMA, CHROMA))  # type: ignore[return-value]


SCALEBITS = 16
ONE_HALF = 1 << (SCALEBITS - 1)
CBCR_OFFSET = 128 << SCALEBITS


def _fix(x: float) -> int:
    return int(x * (1 << SCALEBITS) + 0.5)


def rgb_to_ycc(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An HxWx3 uint8 image as libjpeg's Y, Cb, Cr planes (int64)."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    y = (_fix(0.29900) * r + _fix(0.58700) * g + _fix(0.11400) * b + ONE_HALF) >> SCALEBITS
    cb = (-_fix(0.16874) * r - _fix(0.33126) * g + _fix(0.5) * b + CBCR_OFFSET + ONE_HALF - 1) >> SCALEBITS
    cr = (_fix(0.5) * r - _fix(0.41869) * g - _fix(0.08131) * b + CBCR_OFFSET + ONE_HALF - 1) >> SCALEBITS
    return y, cb, cr


CONST_BITS, PASS1_BITS = 13, 2
C0298, C0390, C0541, C0765, C0899, C1175 = 2446, 3196, 4433, 6270, 7373, 9633
C1501, C1847, C1961, C2053, C2562, C3072 = 12299, 15137, 16069, 16819, 20995, 25172


def _descale(x: np.ndarray, n: int) -> np.ndarray:
    return (x + (1 << (n - 1))) >> n


def _fdct_pass(d: np.ndarray, axis: int, first: bool) -> np.ndarray:
    d = np.moveaxis(d, axis, -1)
    d0, d1, d2, d3, d4, d5, d6, d7 = (d[..., i] for i in range(8))
    tmp0, tmp7, tmp1, tmp6 = d0 + d7, d0 - d7, d1 + d6, d1 - d6
    tmp2, tmp5, tmp3, tmp4 = d2 + d5, d2 - d5, d3 + d4, d3 - d4
    tmp10, tmp13, tmp11, tmp12 = tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2
    out: list[np.ndarray] = [np.empty(0)] * 8
    if first:
        out[0], out[4] = (tmp10 + tmp11) << PASS1_BITS, (tmp10 - tmp11) << PASS1_BITS
        shift = CONST_BITS - PASS1_BITS
    else:
        out[0], out[4] = _descale(tmp10 + tmp11, PASS1_BITS), _descale(tmp10 - tmp11, PASS1_BITS)
        shift = CONST_BITS + PASS1_BITS
    z1 = (tmp12 + tmp13) * C0541
    out[2], out[6] = _descale(z1 + tmp13 * C0765, shift), _descale(z1 - tmp12 * C1847, shift)
    z1, z2, z3, z4 = tmp4 + tmp7, tmp5 + tmp6, tmp4 + tmp6, tmp5 + tmp7
    z5 = (z3 + z4) * C1175
    tmp4, tmp5, tmp6, tmp7 = tmp4 * C0298, tmp5 * C2053, tmp6 * C3072, tmp7 * C1501
    z1, z2, z3, z4 = -z1 * C0899, -z2 * C2562, -z3 * C1961 + z5, -z4 * C0390 + z5
    out[7], out[5] = _descale(tmp4 + z1 + z3, shift), _descale(tmp5 + z2 + z4, shift)
    out[3], out[1] = _descale(tmp6 + z2 + z3, shift), _descale(tmp7 + z1 + z4, shift)
    return np.moveaxis(np.stack(out, -1), -1, axis)


def fdct_islow(blocks: np.ndarray) -> np.ndarray:
    """libjpeg's integer DCT of (..., 8, 8) level-shifted samples (rows, then columns): 8x the DCT."""
    return _fdct_pass(_fdct_pass(blocks, -1, True), -2, False)


def quantize(coefficients: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The nearest multiple of 8 q (islow's scale), halves away from zero, as integers."""
    divisor = table.astype(np.int64) << 3
    return np.sign(coefficients) * ((np.abs(coefficients) + (divisor >> 1)) // divisor)


def _pad(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.pad(plane, ((0, height - plane.shape[0]), (0, width - plane.shape[1])), mode="edge")


def blocks(plane: np.ndarray) -> np.ndarray:
    """An (8h)x(8w) plane as h x w x 8 x 8 blocks."""
    h, w = plane.shape
    return plane.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3)


def _blocks_up(n: int) -> int:
    return -(-n // 8)


def encode(rgb: np.ndarray, luma: np.ndarray, chroma: np.ndarray, subsampling: str = "4:2:0") -> list[np.ndarray]:
    """The quantised coefficients (blocks h x w x 8 x 8, int64) of each component of an HxWx3 uint8 image:
    [Y] for "gray" (the image's luma), [Y, Cb, Cr] for "4:4:4" and "4:2:0"."""
    height, width = rgb.shape[:2]
    y, cb, cr = rgb_to_ycc(rgb)
    out = [quantize(fdct_islow(blocks(_pad(y, 8 * _blocks_up(height), 8 * _blocks_up(width))) - 128), luma)]
    if subsampling == "gray":
        return out
    for plane in (cb, cr):
        if subsampling == "4:2:0":
            rows, cols = -(-height // 2), -(-width // 2)
            full = _pad(plane, 2 * rows, 16 * _blocks_up(cols))  # rows to pairs; columns past the output's blocks
            sums = full[0::2, 0::2] + full[0::2, 1::2] + full[1::2, 0::2] + full[1::2, 1::2]
            bias = np.tile(np.array([1, 2]), sums.shape[1] // 2)[None, :]
            plane = _pad((sums + bias) >> 2, 8 * _blocks_up(rows), 8 * _blocks_up(cols))
        else:
            plane = _pad(plane, 8 * _blocks_up(height), 8 * _blocks_up(width))
        out.append(quantize(fdct_islow(blocks(plane) - 128), chroma))
    return out
