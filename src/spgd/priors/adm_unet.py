"""The guided-diffusion ("ADM") UNet of Dhariwal & Nichol, written here.

Module and parameter names follow the published network exactly, so the public checkpoints
(DPS `ffhq_10m.pt`, OpenAI `256x256_diffusion_uncond.pt`) load with `strict=True`. Attention
runs through `scaled_dot_product_attention` (fused kernels on GPU) instead of explicit einsums.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class ADMConfig:
    """Network hyper-parameters under the guided-diffusion argument names."""

    image_size: int = 256
    in_channels: int = 3
    num_channels: int = 128
    num_res_blocks: int = 2
    channel_mult: tuple[float, ...] | str = ""
    attention_resolutions: tuple[int, ...] | str = "16,8"
    num_heads: int = 4
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    learn_sigma: bool = False
    class_cond: bool = False
    num_classes: int = 1000
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    dropout: float = 0.0
    use_new_attention_order: bool = False
    conv_resample: bool = True
    # accepted for compatibility with guided-diffusion argument dicts; they change no weights
    use_checkpoint: bool = False
    use_fp16: bool = False

    @classmethod
    def from_dict(cls, args: dict[str, Any]) -> "ADMConfig":
        known = {f.name for f in fields(cls)}
        unknown = {k: v for k, v in args.items() if k not in known}
        ignorable = {"diffusion_steps", "noise_schedule", "timestep_respacing", "use_kl",
                     "predict_xstart", "rescale_timesteps", "rescale_learned_sigmas", "model_path",
                     "batch_size", "clip_denoised", "num_samples", "use_ddim", "classifier_scale"}
        bad = sorted(set(unknown) - ignorable)
        if bad:
            raise ValueError(f"unknown ADM network arguments: {bad}; known: {sorted(known)}")
        return cls(**{k: v for k, v in args.items() if k in known})

    def resolved_channel_mult(self) -> tuple[float, ...]:
        mult = self.channel_mult
        if isinstance(mult, str):
            if mult:
                return tuple(float(m) if "." in m else int(m) for m in mult.split(","))
            defaults = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4),
                        128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)}
            if self.image_size not in defaults:
                raise ValueError(f"no default channel_mult for image_size {self.image_size}; give one")
            return defaults[self.image_size]
        return tuple(mult)

    def attention_downsample_rates(self) -> set[int]:
        res = self.attention_resolutions
        if isinstance(res, str):
            res = tuple(int(r) for r in res.split(",") if r.strip())
        return {self.image_size // int(r) for r in res}


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the activation dtype, as the published network does."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int) -> nn.Module:
    return GroupNorm32(32, channels)


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: [cos, sin] halves."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepBlock(nn.Module):
    """A block whose forward also takes the timestep embedding."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential):
    """Sequential that passes the embedding to the children that take it."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1)
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block with timestep conditioning (scale-shift or additive), optional up/down."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = False, up: bool = False, down: bool = False) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False)
            self.x_upd: nn.Module = Upsample(channels, False)
        elif down:
            self.h_upd = Downsample(channels, False)
            self.x_upd = Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(
            normalization(out_channels), nn.SiLU(), nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention; `legacy_order` splits heads before q/k/v as the published weights expect."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 use_new_attention_order: bool = False) -> None:
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"channels {channels} not divisible by num_head_channels {num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.legacy_order = not use_new_attention_order
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        length, heads = qkv.shape[-1], self.num_heads
        head_ch = c // heads
        if self.legacy_order:
            q, k, v = qkv.reshape(b, heads, 3 * head_ch, length).split(head_ch, dim=2)
        else:
            q, k, v = (t.reshape(b, heads, head_ch, length) for t in qkv.chunk(3, dim=1))
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        h = h.transpose(-1, -2).reshape(b, c, length)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class ADMUNet(nn.Module):
    """The ADM UNet: F(x, t) -> epsilon (and, with learn_sigma, variance channels)."""

    def __init__(self, config: ADMConfig) -> None:
        super().__init__()
        self.config = config
        ch0 = config.num_channels
        mult = config.resolved_channel_mult()
        attn_ds = config.attention_downsample_rates()
        heads_up = config.num_heads if config.num_heads_upsample == -1 else config.num_heads_upsample
        emb_dim = ch0 * 4
        self.out_channels = config.in_channels * (2 if config.learn_sigma else 1)

        def res(ch_in: int, ch_out: int, up: bool = False, down: bool = False) -> ResBlock:
            return ResBlock(ch_in, emb_dim, config.dropout, ch_out, config.use_scale_shift_norm, up, down)

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, config.num_head_channels, config.use_new_attention_order)

        self.time_embed = nn.Sequential(nn.Linear(ch0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if config.class_cond:
            self.label_emb = nn.Embedding(config.num_classes, emb_dim)

        ch = int(mult[0] * ch0)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(config.in_channels, ch, 3, padding=1))])
        skip_chans, ds = [ch], 1
        for level, m in enumerate(mult):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(m * ch0))]
                ch = int(m * ch0)
                if ds in attn_ds:
                    layers.append(attn(ch, config.num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(mult) - 1:
                down = (res(ch, ch, down=True) if config.resblock_updown
                        else Downsample(ch, config.conv_resample, ch))
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch, config.num_heads), res(ch, ch))

        self.output_blocks = nn.ModuleList([])
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(config.num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), int(ch0 * m))]
                ch = int(ch0 * m)
                if ds in attn_ds:
                    layers.append(attn(ch, heads_up))
                if level and i == config.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if config.resblock_updown
                                  else Upsample(ch, config.conv_resample, ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(int(mult[0] * ch0), self.out_channels, 3, padding=1)))

    def forward(self, x: Tensor, timesteps: Tensor, y: Tensor | None = None) -> Tensor:
        t_emb = timestep_embedding(timesteps, self.config.num_channels).to(self.time_embed[0].weight.dtype)
        emb = self.time_embed(t_emb).type(x.dtype)
        if self.config.class_cond:
            if y is None:
                raise ValueError("this network is class-conditional: pass class labels y")
            emb = emb + self.label_emb(y).type(x.dtype)
        skips, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)
