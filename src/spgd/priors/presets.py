"""Network presets of the public 256x256 checkpoints, under the guided-diffusion argument names."""
from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
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
}

WHERE_TO_GET = {
    "ffhq256": "ffhq_10m.pt from the DPS authors' release (DPS README, 'pretrained checkpoints': FFHQ model)",
    "imagenet256": "256x256_diffusion_uncond.pt from OpenAI's guided-diffusion release (README, 'Download pre-trained models')",
}
