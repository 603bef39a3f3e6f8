"""Non-linear blur: the BKSE KernelWizard network blurring a sharp image with a random kernel code.

DPS's non-linear deblurring task (reused by DAPS and SPGD) takes the blur-kernel encoder of Tran et
al., "Explore Image Deblurring via Encoded Blur Kernel Space" (CVPR 2021, "BKSE"), in its GOPRO_wVAE
configuration (nf 64, 10 front / 20 back residual blocks, 512-channel kernel code, VAE kernel
extractor with 4 ResNet blocks, no normalisation) and uses its `adaptKernel(x_sharp, code)` as the
forward model: images go from [-1, 1] to [0, 1], through the network, back to [-1, 1] and are
clipped there, with code = 1.2 * N(0, I) of shape 512 x H/128 x W/128 (2 x 2 for 256 x 256 images).
DPS redraws the code at every forward call; here, as in DAPS, it is drawn once per image (in
`draw`, from that image's generator) and kept, so the measurement and the solver see one operator.

The network below is written to load the released `GOPRO_wVAE.pth` with strict key matching. Only
`feature_extractor`, `adapter` and `recon_trunk` run; `kernel_extractor` (the encoder F of the
paper) is built because its weights are part of the checkpoint.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .base import Operator

NF = 64  # feature channels
KERNEL_DIM = 512  # channels of the kernel code
LATENT_SCALE = 1.2  # DPS draws the kernel code as 1.2 * N(0, I)
DOWNSCALE = 128  # image size / code size: 4 in the feature extractor, 32 in the adapter U-Net

_DOWNLOAD_HINT = (
    "Download GOPRO_wVAE.pth from the model zoo of the BKSE repository "
    "(https://github.com/VinAIResearch/blur-kernel-space-exploring#model-zoo, entry 'GOPRO wVAE'; the DAPS "
    "README links a copy at https://drive.google.com/file/d/1vRoDpIsrTRYZKsOMPNbPcMtFDpCT6Foy). DPS reads it "
    "from experiments/pretrained/GOPRO_wVAE.pth (set in bkse/options/generate_blur/default.yml), DAPS from "
    "forward_operator/bkse/experiments/pretrained/. Pass the file's path as `weights`."
)


class _ResidualBlock(nn.Module):
    """conv-ReLU-conv with an identity shortcut, no normalisation (the feature/reconstruction blocks)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(torch.relu(self.conv1(x)))


class _ReflectResnetBlock(nn.Module):
    """The kernel extractor's residual block (two reflection-padded bias-free 3x3 convs), held for its weights.

    The nn.Identity entries stand for the configuration's "none" normalisation; they keep the
    Sequential indices (hence the checkpoint's key names) of the original layout.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False), nn.Identity(), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False), nn.Identity(),
        )


class _KernelExtractor(nn.Module):
    """The encoder F ((sharp, blurred) features -> kernel code mean and log-variance), held for its weights.

    Blurring never runs it, so it has no forward pass here.
    """

    def __init__(self) -> None:
        super().__init__()
        out_channels = 2 * KERNEL_DIM
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(2 * NF, NF, 7, bias=False), nn.Identity(), nn.ReLU(),
        ]
        for level in range(5):
            inc, ouc = min(NF * 2**level, out_channels), min(NF * 2 ** (level + 1), out_channels)
            layers += [nn.Conv2d(inc, ouc, 3, 2, 1, bias=False), nn.Identity(), nn.ReLU()]
        layers += [_ReflectResnetBlock(out_channels) for _ in range(4)]
        self.model = nn.Sequential(*layers)


class _UnetLevel(nn.Module):
    """One level of the adapter U-Net: stride-2 conv down, inner levels, transposed conv up.

    Inner levels apply LeakyReLU(0.2) first and concatenate the activated input as the skip
    connection: the original code applies that activation in place, so its skip carries it too.
    The innermost level concatenates the kernel code to its bottleneck features.
    """

    def __init__(self, outer: int, inner: int, submodule: "_UnetLevel | None" = None, outermost: bool = False) -> None:
        super().__init__()
        self.outermost = outermost
        downconv = nn.Conv2d(outer, inner, 4, 2, 1, bias=False)
        if outermost:
            self.down = nn.Sequential(downconv)
            self.up = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1), nn.Tanh())
        else:
            norm = [nn.Identity()] if submodule is not None else []
            self.down = nn.Sequential(nn.LeakyReLU(0.2), downconv, *norm)
            self.up = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1, bias=False), nn.Identity())
        self.submodule = submodule

    def forward(self, x: Tensor, code: Tensor) -> Tensor:
        if self.outermost:
            return self.up(self.submodule(self.down(x), code))
        x = self.down[0](x)
        inner = self.down[1:](x)
        inner = torch.cat((inner, code), dim=1) if self.submodule is None else self.submodule(inner, code)
        return torch.cat((self.up(inner), x), dim=1)


class _KernelAdapter(nn.Module):
    """The adapter G: a 5-level U-Net on image features with the kernel code injected at the bottleneck."""

    def __init__(self) -> None:
        super().__init__()
        level = _UnetLevel(NF * 8, NF * 8)
        for outer, inner in ((NF * 4, NF * 8), (NF * 2, NF * 4), (NF, NF * 2)):
            level = _UnetLevel(outer, inner, level)
        self.model = _UnetLevel(NF, NF, level, outermost=True)


class KernelWizard(nn.Module):
    """BKSE's KernelWizard in the GOPRO_wVAE configuration (the layout of `GOPRO_wVAE.pth`)."""

    def __init__(self) -> None:
        super().__init__()
        self.feature_extractor = nn.Sequential(
            nn.Conv2d(3, NF, 3, 1, 1), nn.LeakyReLU(0.1),
            nn.Conv2d(NF, NF, 3, 2, 1), nn.LeakyReLU(0.1),
            nn.Conv2d(NF, NF, 3, 2, 1), nn.LeakyReLU(0.1),
            *[_ResidualBlock(NF) for _ in range(10)],
        )
        self.kernel_extractor = _KernelExtractor()
        self.adapter = _KernelAdapter()
        self.recon_trunk = nn.Sequential(
            *[_ResidualBlock(NF) for _ in range(20)],
            nn.Conv2d(NF, NF * 4, 3, 1, 1), nn.PixelShuffle(2), nn.LeakyReLU(0.1),
            nn.Conv2d(NF, 64 * 4, 3, 1, 1), nn.PixelShuffle(2), nn.LeakyReLU(0.1),
            nn.Conv2d(64, 64, 3, 1, 1), nn.LeakyReLU(0.1),
            nn.Conv2d(64, 3, 3, 1, 1),
        )

    def adapt_kernel(self, sharp: Tensor, code: Tensor) -> Tensor:
        """Blur `sharp` (N x 3 x H x W in [0, 1], H and W multiples of 128) with `code` (N x 512 x H/128 x W/128)."""
        features = self.adapter.model(self.feature_extractor(sharp), code)
        return self.recon_trunk(features) + sharp


def load_kernel_wizard(weights: str | Path) -> KernelWizard:
    """A frozen, eval-mode KernelWizard with the weights of `weights`, keys and shapes matched strictly."""
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"KernelWizard weights not found: {path}. {_DOWNLOAD_HINT}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for files that are not torch checkpoints
        raise ValueError(f"{path} is not a readable torch checkpoint ({type(error).__name__}; only tensors are read "
                         f"from it, never other pickled objects). {_DOWNLOAD_HINT}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors (got {type(state).__name__}). {_DOWNLOAD_HINT}")
    with torch.device("meta"):
        network = KernelWizard()
    expected = set(network.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match the BKSE GOPRO_wVAE KernelWizard: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    try:
        network.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise ValueError(f"{path} does not match the BKSE GOPRO_wVAE KernelWizard: {error}") from error
    return network.requires_grad_(False).eval()


@functools.lru_cache(maxsize=1)
def _shared_kernel_wizard(path: str, mtime_ns: int) -> KernelWizard:
    """The last loaded network, reused while its file is unchanged: runs build one operator per batch
    and the file is large (about 460 MB)."""
    return load_kernel_wizard(path)


class NonlinearBlur(Operator):
    """y = KernelWizard.adaptKernel(x, code), with one random kernel code per image (DPS's nonlinear_blur)."""

    name = "nonlinear_blur"
    linear = False
    # what a missing required parameter means to a user (make_operator's error names it)
    required = {"weights": "the BKSE GOPRO_wVAE.pth weights file (--op-weights on the command line). " + _DOWNLOAD_HINT}

    def __init__(self, weights: str | Path, noise_sigma: float = 0.05, kernel_latent: Tensor | None = None) -> None:
        super().__init__(noise_sigma)
        self.weights = Path(weights)
        self.network = (_shared_kernel_wizard(str(self.weights.resolve()), self.weights.stat().st_mtime_ns)
                        if self.weights.is_file() else load_kernel_wizard(self.weights))
        self.kernel_latent = kernel_latent

    def draw(self, x: Tensor, generators: Sequence[torch.Generator | None]) -> None:
        """Draw a kernel code 1.2 * N(0, I) per image, unless one is set already."""
        if self.kernel_latent is not None:
            return
        shape = (KERNEL_DIM, *_code_size(x))
        codes = [torch.randn(shape, generator=g, dtype=torch.float32) for g in generators]
        self.kernel_latent = LATENT_SCALE * torch.stack(codes).to(x.device)

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        if self.kernel_latent is None:
            raise RuntimeError("nonlinear_blur has no kernel latent yet: call measure() or update(kernel_latent=...)")
        code = self.kernel_latent.to(device=x.device, dtype=x.dtype)
        expected = (KERNEL_DIM, *_code_size(x))
        if tuple(code.shape[1:]) != expected or code.shape[0] not in (1, x.shape[0]):
            raise ValueError(
                f"kernel latent of shape {tuple(code.shape)} does not fit a batch of {x.shape[0]} images "
                f"of size {x.shape[-2]}x{x.shape[-1]}: expected (1 or {x.shape[0]}, {', '.join(map(str, expected))})"
            )
        blurred = self.network.adapt_kernel((x + 1) / 2, code.expand(x.shape[0], *expected))
        return (2 * blurred - 1).clamp(-1, 1)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "weights": str(self.weights), "kernel_latent": self.kernel_latent}


def _code_size(x: Tensor) -> tuple[int, int]:
    """Spatial size of the kernel code for images like `x` (which must be multiples of 128 pixels)."""
    height, width = x.shape[-2:]
    if height % DOWNSCALE or width % DOWNSCALE:
        raise ValueError(
            f"nonlinear_blur needs image sizes that are multiples of {DOWNSCALE}, got {height}x{width}"
        )
    return height // DOWNSCALE, width // DOWNSCALE
