"""ADM network architectures under the guided-diffusion argument names: the one table of them.

`ffhq256`/`imagenet256` are the public 256x256 checkpoints' (`--arch` for a file that stores no
config); `adm64` and `faces64` are architectures to train (`spgd train --config`).
"""
from __future__ import annotations

from typing import Any

ARCHITECTURES: dict[str, dict[str, Any]] = {
    # DPS `ffhq_10m.pt` (configs/model_config.yaml of the DPS code)
    "ffhq256": dict(image_size=256, num_channels=128, num_res_blocks=1, channel_mult="",
                    attention_resolutions="16", num_heads=4, num_head_channels=64, num_heads_upsample=-1,
                    learn_sigma=True, class_cond=False, use_scale_shift_norm=True, resblock_updown=True,
                    dropout=0.0, use_new_attention_order=False),
    # OpenAI guided-diffusion `256x256_diffusion_uncond.pt`
    "imagenet256": dict(image_size=256, num_channels=256, num_res_blocks=2, channel_mult="",
                        attention_resolutions="32,16,8", num_heads=4, num_head_channels=64,
                        num_heads_upsample=-1, learn_sigma=True, class_cond=False,
                        use_scale_shift_norm=True, resblock_updown=True, dropout=0.0,
                        use_new_attention_order=False),
    # ~8.0M parameters, 15.3 MiB in fp16: 64x64 faces on a GPU
    "adm64": dict(image_size=64, num_channels=64, channel_mult="1,1,2,2", num_res_blocks=2,
                  attention_resolutions="16,8", num_head_channels=32, learn_sigma=False,
                  use_scale_shift_norm=True, resblock_updown=False, dropout=0.1),
    # 1.63M parameters, 3.1 MiB in fp16: the built-in face prior, sized for training on one CPU core
    "faces64": dict(image_size=64, num_channels=32, channel_mult="1,2,2,2", num_res_blocks=1,
                    attention_resolutions="16", num_head_channels=32, learn_sigma=False,
                    use_scale_shift_norm=True, resblock_updown=False, dropout=0.0),
}
# the public checkpoints' architectures: a state dict that stores no config is matched against these
PUBLIC = ("ffhq256", "imagenet256")
