"""MATLAB's `imresize(img, scale, 'bicubic')`, antialiasing on, in numpy: the resize the SR literature's LR
images and bicubic rows were made with (the cubic kernel a = -0.5, widened by 1/scale when shrinking,
weights normalised per output pixel, symmetric padding at the borders). Only for comparing with
published rows; spgd's own operator is the antialiased bicubic of `spgd.operators.super_resolution`.
"""
from __future__ import annotations

import numpy as np


def _cubic(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return ((1.5 * a ** 3 - 2.5 * a ** 2 + 1) * (a <= 1)
            + (-0.5 * a ** 3 + 2.5 * a ** 2 - 4 * a + 2) * ((a > 1) & (a <= 2)))


def _weights(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    width = 4.0 / scale if scale < 1 else 4.0
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(np.ceil(width)) + 2
    index = left[:, None] + np.arange(taps)[None] - 1  # 0-based source pixels
    distance = u[:, None] - index - 1
    weights = scale * _cubic(scale * distance) if scale < 1 else _cubic(distance)
    weights /= weights.sum(1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    index = mirror[np.mod(index, 2 * in_len).astype(int)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], index[:, keep]


def imresize(image: np.ndarray, scale: float) -> np.ndarray:
    """H x W x C float image resized by `scale` as MATLAB does (height first, then width)."""
    out = image.astype(np.float64)
    for axis in (0, 1):
        in_len = out.shape[axis]
        out_len = int(np.ceil(in_len * scale))
        weights, index = _weights(in_len, out_len, scale)
        moved = np.moveaxis(out, axis, 0)
        resized = np.einsum("ot,ot...->o...", weights, moved[index])
        out = np.moveaxis(resized, 0, axis)
    return out
