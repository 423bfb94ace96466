"""The sd-turbo architecture with random weights, built from its configuration in code.

Benchmarks need the real model's cost (its layer sizes) without a download; the weights do
not change the arithmetic, so random ones time the same as the trained ones. The configuration
is Stable Diffusion 2.1's, which sd-turbo distils: UNet, OpenCLIP ViT-H text encoder, SD VAE,
and the Euler scheduler with trailing timesteps. Used by bench/worker.py and bench/inference.py
(`from sd_turbo_arch import build_sd_turbo` when run as `python bench/<name>.py`).
"""

import torch
from diffusers import (
    AutoencoderKL,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from sd_webui.demo_model import demo_tokenizer, turbo_pipeline


def build_sd_turbo(dtype: torch.dtype = torch.float32, seed: int = 0) -> StableDiffusionPipeline:
    """sd-turbo's pipeline (about 1.3 billion parameters) with random weights, on the CPU.

    The weights are created directly in `dtype` (no float32 copy first), which halves the
    peak memory for bfloat16 and float16.
    """
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        pipeline = _build(seed)
    finally:
        torch.set_default_dtype(default_dtype)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _build(seed: int) -> StableDiffusionPipeline:
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=23,
            num_attention_heads=16,
            max_position_embeddings=77,
            hidden_act="gelu",
            projection_dim=1024,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=(
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=(
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ),
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=(5, 10, 20, 20),
        cross_attention_dim=1024,
        use_linear_projection=True,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=768,
    )
    return turbo_pipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=demo_tokenizer(model_max_length=77), unet=unet
    )
