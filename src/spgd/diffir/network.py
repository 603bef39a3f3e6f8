"""DiffIR's networks (Xia et al., ICCV 2023), as its released code builds them, at a configurable size.

- `DIRformer`: a Restormer U-net whose every attention (DMTA) and feed-forward (DGFN) block is modulated by
  one vector per image, the IPR: [gamma, beta] = W z, F' = gamma * LN(F) + beta (the raw gamma, as released).
- `CPEN`: the conv encoder giving that vector; stage 1 sees the ground truth with the degraded image, stage 2
  the degraded image only (its output conditions the IPR diffusion).
- `IPRDenoiser`: the MLP of the 4-step IPR diffusion (x0-parameterisation, not residual despite the
  released name `ResMLP`); `IPRSchedule` its linear-in-sqrt(beta) schedule and deterministic reverse step.

Images are in [0, 1] here, as in DiffIR's code. `head` selects the task's variant: "sr" (the input is the
low-resolution image, a PixelShuffle tail and a nearest-upsampled skip), "residual" (deblurring: + input),
"inpaint" (input = masked image and hole mask, no skip; the caller composites). With `fill` (spgd's, for
CPU budgets) the inpainting input's holes are pre-filled (`model.fill_holes`) and the output is a residual
over that fill, as the SR head's is over its upsampled input.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HEADS = ("sr", "residual", "inpaint")


@dataclass
class DiffIRConfig:
    """The size of a DiffIR model; the constructor arguments of `DiffIRS1`/`DiffIRS2` (saved with weights)."""

    head: str = "sr"
    scale: int = 4  # "sr" only
    dim: int = 16
    blocks: tuple[int, int, int, int] = (1, 1, 1, 2)
    refinement: int = 1
    heads: tuple[int, int, int, int] = (1, 1, 2, 4)
    ffn: float = 2.0
    bias_free_norm: bool = False
    cpen_feats: int = 32  # IPR length = 4 * cpen_feats (released: 64 -> 256)
    cpen_res: int = 2
    denoise_res: int = 1
    timesteps: int = 4
    linear_start: float = 0.1
    linear_end: float = 0.99
    constant_ipr: bool = False  # ablation: stage 1 with one learned IPR for every image (no CPEN, no GT)
    fill: bool = False  # "inpaint" only: holes pre-filled in the input, the output a residual over the fill

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"DiffIR head must be one of {HEADS}, got {self.head!r}")
        if self.fill and self.head != "inpaint":
            raise ValueError(f"DiffIR's fill is for the inpainting head, not {self.head!r}")
        if self.head == "sr" and self.scale != 4:
            raise ValueError(f"DiffIR super-resolution is built for scale 4 (its CPEN works at 1/4), got {self.scale}")
        self.blocks = tuple(int(b) for b in self.blocks)
        self.heads = tuple(int(h) for h in self.heads)

    @property
    def ipr(self) -> int:
        return 4 * self.cpen_feats

    @property
    def input_channels(self) -> int:
        """Channels of the DIRformer's input: the degraded image (inpainting: and the hole mask)."""
        return 4 if self.head == "inpaint" else 3

    @property
    def stride(self) -> int:
        """What the DIRformer's input height and width must be a multiple of (3 halvings; CPEN's unshuffle)."""
        return 8

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each pixel (Restormer's WithBias/BiasFree LayerNorm, eps 1e-5)."""

    def __init__(self, channels: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        var = x.var(1, keepdim=True, unbiased=False)
        if self.bias is None:  # BiasFree: no mean subtraction
            return x / torch.sqrt(var + 1e-5) * self.weight[:, None, None]
        x = (x - x.mean(1, keepdim=True)) / torch.sqrt(var + 1e-5)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def _modulate(x: Tensor, kernel: nn.Linear, z: Tensor) -> Tensor:
    gamma, beta = kernel(z)[:, :, None, None].chunk(2, dim=1)
    return x * gamma + beta


class DMTA(nn.Module):
    """Dynamic multi-head transposed attention: channel-wise attention (cost linear in pixels) on IPR-modulated
    features."""

    def __init__(self, dim: int, heads: int, ipr: int) -> None:
        super().__init__()
        self.heads = heads
        self.kernel = nn.Linear(ipr, 2 * dim, bias=False)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(_modulate(x, self.kernel, z))).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attention = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project_out((attention @ v).reshape(b, c, h, w))


class DGFN(nn.Module):
    """Dynamic gated depthwise feed-forward network on IPR-modulated features."""

    def __init__(self, dim: int, expansion: float, ipr: int) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.kernel = nn.Linear(ipr, 2 * dim, bias=False)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=False)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        u1, u2 = self.dwconv(self.project_in(_modulate(x, self.kernel, z))).chunk(2, dim=1)
        return self.project_out(F.gelu(u1) * u2)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, expansion: float, ipr: int, bias_free_norm: bool) -> None:
        super().__init__()
        self.norm1 = ChannelNorm(dim, bias=not bias_free_norm)
        self.attn = DMTA(dim, heads, ipr)
        self.norm2 = ChannelNorm(dim, bias=not bias_free_norm)
        self.ffn = DGFN(dim, expansion, ipr)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), z)
        return x + self.ffn(self.norm2(x), z)


class Level(nn.ModuleList):
    """Blocks of one U-net level, all fed the same IPR."""

    def __init__(self, count: int, dim: int, heads: int, cfg: DiffIRConfig) -> None:
        super().__init__(TransformerBlock(dim, heads, cfg.ffn, cfg.ipr, cfg.bias_free_norm) for _ in range(count))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:  # type: ignore[override]
        for block in self:
            x = block(x, z)
        return x


def _down(dim: int) -> nn.Sequential:  # C -> 2C at half size
    return nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))


def _up(dim: int) -> nn.Sequential:  # C -> C/2 at twice the size
    return nn.Sequential(nn.Conv2d(dim, dim * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))


class DIRformer(nn.Module):
    """The restoration U-net: widths C, 2C, 4C, 8C; the last decoder level and the refinement run at 2C."""

    def __init__(self, cfg: DiffIRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, n, h = cfg.dim, cfg.blocks, cfg.heads
        self.patch_embed = nn.Conv2d(cfg.input_channels, c, 3, padding=1, bias=False)
        self.encoder1, self.down1 = Level(n[0], c, h[0], cfg), _down(c)
        self.encoder2, self.down2 = Level(n[1], 2 * c, h[1], cfg), _down(2 * c)
        self.encoder3, self.down3 = Level(n[2], 4 * c, h[2], cfg), _down(4 * c)
        self.latent = Level(n[3], 8 * c, h[3], cfg)
        self.up3, self.reduce3 = _up(8 * c), nn.Conv2d(8 * c, 4 * c, 1, bias=False)
        self.decoder3 = Level(n[2], 4 * c, h[2], cfg)
        self.up2, self.reduce2 = _up(4 * c), nn.Conv2d(4 * c, 2 * c, 1, bias=False)
        self.decoder2 = Level(n[1], 2 * c, h[1], cfg)
        self.up1 = _up(2 * c)
        self.decoder1 = Level(n[0], 2 * c, h[0], cfg)
        self.refinement = Level(cfg.refinement, 2 * c, h[0], cfg)
        if cfg.head == "sr":  # released `common.Upsampler`: log2(scale) x [conv 2C -> 8C, PixelShuffle 2]
            stages = [m for _ in range(2) for m in (nn.Conv2d(2 * c, 8 * c, 3, padding=1), nn.PixelShuffle(2))]
            self.tail = nn.Sequential(*stages, nn.Conv2d(2 * c, 3, 3, padding=1))
        else:
            self.tail = nn.Conv2d(2 * c, 3, 3, padding=1, bias=False)

    def forward(self, lq: Tensor, z: Tensor) -> Tensor:
        """The restored image from the degraded input (N x input_channels x H x W, H and W multiples of 8)."""
        e1 = self.encoder1(self.patch_embed(lq), z)
        e2 = self.encoder2(self.down1(e1), z)
        e3 = self.encoder3(self.down2(e2), z)
        x = self.latent(self.down3(e3), z)
        x = self.decoder3(self.reduce3(torch.cat([self.up3(x), e3], 1)), z)
        x = self.decoder2(self.reduce2(torch.cat([self.up2(x), e2], 1)), z)
        x = self.decoder1(torch.cat([self.up1(x), e1], 1), z)
        x = self.tail(self.refinement(x, z))
        if self.cfg.head == "sr":
            return x + F.interpolate(lq, scale_factor=self.cfg.scale, mode="nearest")
        if self.cfg.head == "residual":
            return x + lq
        return x + lq[:, :3] if self.cfg.fill else x


class ResBlock(nn.Module):
    def __init__(self, feats: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(feats, feats, 3, padding=1), nn.LeakyReLU(0.1, True),
                                  nn.Conv2d(feats, feats, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class CPEN(nn.Module):
    """Compact IR prior extraction network: conv features at a quarter of the HR size, averaged to one vector."""

    def __init__(self, in_channels: int, cfg: DiffIRConfig) -> None:
        super().__init__()
        nf = cfg.cpen_feats
        act = lambda: nn.LeakyReLU(0.1, True)  # noqa: E731
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, nf, 3, padding=1), act(), *[ResBlock(nf) for _ in range(cfg.cpen_res)],
            nn.Conv2d(nf, 2 * nf, 3, padding=1), act(), nn.Conv2d(2 * nf, 2 * nf, 3, padding=1), act(),
            nn.Conv2d(2 * nf, 4 * nf, 3, padding=1), act(), nn.AdaptiveAvgPool2d(1))
        self.mlp = nn.Sequential(nn.Linear(4 * nf, 4 * nf), act(), nn.Linear(4 * nf, 4 * nf), act())

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.body(x).flatten(1))


def _quarter(image: Tensor, cfg: DiffIRConfig) -> Tensor:
    """The DIRformer's input as CPEN sees it: at a quarter of the HR size (the LR image itself for 4x SR)."""
    return image if cfg.head == "sr" else F.pixel_unshuffle(image, 4)


class IPRDenoiser(nn.Module):
    """x0 estimate of the IPR from [condition, t / (10 T), noisy IPR]: Linear, LeakyReLU, then `denoise_res` x
    [Linear, LeakyReLU] (not residual, as released)."""

    def __init__(self, cfg: DiffIRConfig) -> None:
        super().__init__()
        self.period = 10 * cfg.timesteps
        layers: list[nn.Module] = [nn.Linear(2 * cfg.ipr + 1, cfg.ipr), nn.LeakyReLU(0.1, True)]
        for _ in range(cfg.denoise_res):
            layers += [nn.Linear(cfg.ipr, cfg.ipr), nn.LeakyReLU(0.1, True)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, z_t: Tensor, t: int, condition: Tensor) -> Tensor:
        time = torch.full((z_t.shape[0], 1), t / self.period, dtype=z_t.dtype, device=z_t.device)
        return self.mlp(torch.cat([condition, time, z_t], dim=1))


class IPRSchedule(nn.Module):
    """The T-step schedule: beta_t = linspace(sqrt(start), sqrt(end), T)^2 (LDM's "linear"), and the posterior
    mean z_{t-1} = coef1_t x0 + coef2_t z_t with no noise added (as every released `p_sample` returns)."""

    def __init__(self, cfg: DiffIRConfig) -> None:
        super().__init__()
        betas = torch.linspace(cfg.linear_start ** 0.5, cfg.linear_end ** 0.5, cfg.timesteps, dtype=torch.float64) ** 2
        alphas_bar = torch.cumprod(1 - betas, 0)
        previous = torch.cat([torch.ones(1, dtype=torch.float64), alphas_bar[:-1]])
        self.register_buffer("betas", betas.float(), persistent=False)
        self.register_buffer("alphas_bar", alphas_bar.float(), persistent=False)
        self.register_buffer("coef1", (betas * previous.sqrt() / (1 - alphas_bar)).float(), persistent=False)
        self.register_buffer("coef2", ((1 - previous) * (1 - betas).sqrt() / (1 - alphas_bar)).float(),
                             persistent=False)

    def noisy_start(self, z0: Tensor, noise: Tensor) -> Tensor:
        """q(z_T | z0): the training chain's start, sqrt(abar_T) z0 + sqrt(1 - abar_T) noise."""
        last = self.alphas_bar[-1]
        return last.sqrt() * z0 + (1 - last).sqrt() * noise

    def reverse(self, denoiser: IPRDenoiser, z: Tensor, condition: Tensor) -> Tensor:
        """All T reverse steps from z_T (gradients flow through the whole chain); the last returns x0."""
        for t in reversed(range(len(self.betas))):
            z = self.coef1[t] * denoiser(z, t, condition) + self.coef2[t] * z
        return z


class ConstantIPR(nn.Module):
    """One learned IPR for every image: the same backbone without an image-dependent prior (the ablation)."""

    def __init__(self, cfg: DiffIRConfig) -> None:
        super().__init__()
        self.z = nn.Parameter(torch.ones(1, cfg.ipr))

    def forward(self, x: Tensor) -> Tensor:
        return self.z.repeat(x.shape[0], 1)  # a copy: a view of a parameter under no_grad upsets module hooks


class DiffIRS1(nn.Module):
    """Stage 1: the IPR from ground truth and degraded input (CPEN_S1), and the DIRformer it modulates."""

    def __init__(self, cfg: DiffIRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        quarter = 3 if cfg.head == "sr" else 16 * cfg.input_channels
        self.E = ConstantIPR(cfg) if cfg.constant_ipr else CPEN(quarter + 48, cfg)
        self.G = DIRformer(cfg)

    def ipr(self, lq: Tensor, gt: Tensor | None) -> Tensor:
        if self.cfg.constant_ipr:
            return self.E(lq)
        return self.E(torch.cat([_quarter(lq, self.cfg), F.pixel_unshuffle(gt, 4)], 1))

    def forward(self, lq: Tensor, gt: Tensor | None) -> Tensor:
        return self.G(lq, self.ipr(lq, gt))


class DiffIRS2(nn.Module):
    """Stage 2: CPEN_S2 on the degraded input conditions the T-step IPR diffusion; one DIRformer pass."""

    def __init__(self, cfg: DiffIRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        quarter = 3 if cfg.head == "sr" else 16 * cfg.input_channels
        self.G = DIRformer(cfg)
        self.condition = CPEN(quarter, cfg)
        self.denoise = IPRDenoiser(cfg)
        self.schedule = IPRSchedule(cfg)

    def estimate_ipr(self, lq: Tensor, z_start: Tensor) -> Tensor:
        """The IPR the diffusion reaches from z_T = `z_start` (inference: N(0, I); training: `noisy_start`)."""
        return self.schedule.reverse(self.denoise, z_start, self.condition(_quarter(lq, self.cfg)))

    def forward(self, lq: Tensor, z_start: Tensor) -> tuple[Tensor, Tensor]:
        """(restored image, estimated IPR)."""
        z = self.estimate_ipr(lq, z_start)
        return self.G(lq, z), z


def config_from_dict(values: dict[str, Any]) -> DiffIRConfig:
    known = {f for f in DiffIRConfig.__dataclass_fields__}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown DiffIR configuration key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return DiffIRConfig(**values)

