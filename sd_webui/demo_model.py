"""A tiny, randomly initialised Stable Diffusion pipeline saved as a local diffusers folder.

Tests and an offline first run need a model the worker loads through exactly the path a real
one takes (`from_pretrained` on a folder), without a download and in well under a second. Its
images are noise, but every piece of the pipeline is real: CLIP tokenizer and text encoder,
UNet, VAE and the Euler scheduler sd-turbo uses.
"""

import argparse
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
TEXT_WIDTH = 32
# A few merges, so the tokenizer is real byte-pair encoding and common words are one token.
MERGES = (
    ("o", "g</w>"),
    ("d", "og</w>"),
    ("c", "a"),
    ("ca", "t</w>"),
    ("r", "e"),
    ("re", "d</w>"),
    ("e", "n"),
)


def demo_tokenizer(model_max_length: int = 77) -> CLIPTokenizer:
    """A CLIP tokenizer over every byte (alone and word-final), so any prompt tokenizes.

    transformers 5 wants `vocab=`/`merges=` here: `vocab_file=` is silently ignored and gives
    a 2-token tokenizer.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [BOS, EOS, *alphabet, *(f"{char}</w>" for char in alphabet)]
    tokens += [left + right for left, right in MERGES]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=list(MERGES), model_max_length=model_max_length)


def turbo_pipeline(
    *,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    unet: UNet2DConditionModel,
) -> StableDiffusionPipeline:
    """A text-to-image pipeline of these parts with sd-turbo's scheduler (Euler, trailing
    timesteps) and no safety checker, as sd-turbo ships."""
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="trailing",
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_demo_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """The tiny pipeline in memory; the same seed gives the same weights."""
    torch.manual_seed(seed)
    tokenizer = demo_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_WIDTH,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=TEXT_WIDTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=32,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    # Four blocks, so the latent is 1/8 of the image as in Stable Diffusion: any job size that
    # contract 1 allows (multiples of 8 from 256) works, and 256x256 is a 32x32 latent.
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=256,
    )
    return turbo_pipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet)


def build_demo_model(folder: Path, seed: int = 0) -> Path:
    """Save the tiny pipeline into `folder` (a diffusers folder for `SD_MODEL`) and return it."""
    folder = Path(folder)
    build_demo_pipeline(seed).save_pretrained(folder)
    return folder


def main() -> None:
    """`sd-demo-model FOLDER`: then run a worker with `SD_MODEL=FOLDER`, offline."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("folder", type=Path, help="where to write the model (created if needed)")
    folder = build_demo_model(parser.parse_args().folder)
    print(f"demo model written to {folder}; run a worker with SD_MODEL={folder}")


if __name__ == "__main__":
    main()
