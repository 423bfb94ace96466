"""Speed settings for the loaded pipeline: which dtype to run in, and what to change after loading.

Kept apart from loading so the choices that trade exactness for speed are in one place, and
each of them is recorded in the job's metadata. Every change here was measured with
`bench/inference.py` before it was kept; see docs/performance.md.
"""

from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderTiny, DiffusionPipeline

from sd_webui.settings import Settings
from sd_webui.worker.model_source import ModelUnavailable, first_line

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


@lru_cache
def cpu_has_native_bf16() -> bool:
    """bfloat16 pays only with native bf16 arithmetic (AVX512-BF16 or AMX).

    Without it torch falls back to scalar kernels: on an AVX2-only EPYC a UNet-sized bf16
    matmul measured about 100x slower than float32, which makes a 512x512 image take minutes.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return not CPU_BF16_FLAGS.isdisjoint(flags)


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """`SD_DTYPE` to a torch dtype: auto is float16 on cuda, bfloat16 on a bf16 CPU, else float32.

    A dtype the device cannot run at a usable speed is a ValueError (a start-up error), so a
    misconfigured worker stops at once instead of taking minutes per image.
    """
    if name == "auto":
        if device == "cuda":
            return torch.float16
        return torch.bfloat16 if device == "cpu" and cpu_has_native_bf16() else torch.float32
    if name not in DTYPES:
        raise ValueError(f"SD_DTYPE={name} is not one of auto, {', '.join(DTYPES)}")
    dtype = DTYPES[name]
    if device == "cpu" and dtype == torch.float16:
        raise ValueError(
            "SD_DTYPE=float16 is not usable on cpu (no fast float16 kernels); "
            "use SD_DTYPE=auto, float32 or bfloat16"
        )
    if device == "cpu" and dtype == torch.bfloat16 and not cpu_has_native_bf16():
        raise ValueError(
            "SD_DTYPE=bfloat16 needs a CPU with avx512_bf16 or amx_bf16 (this one would run "
            "about 100x slower than float32); use SD_DTYPE=auto or float32"
        )
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.bfloat16` as the `SD_DTYPE` value that selects it: `bfloat16`."""
    return str(dtype).removeprefix("torch.")


def load_tiny_vae(model: str, device: str, dtype: torch.dtype) -> AutoencoderTiny:
    """`SD_TINY_VAE_MODEL` (TAESD: a hub id or a local folder); raises ModelUnavailable."""
    try:
        vae = AutoencoderTiny.from_pretrained(model, torch_dtype=dtype)
    except Exception as error:  # a missing or broken folder fails in many ways; all mean the same
        raise ModelUnavailable(
            f"SD_TINY_VAE_MODEL={model} could not be loaded ({first_line(error)}); set it to a "
            "local AutoencoderTiny folder or a cached hub id, or set SD_TINY_VAE=0"
        ) from error
    return vae.to(device)


def use_channels_last(module: torch.nn.Module) -> None:
    """NHWC weights: oneDNN's convolutions on the CPU skip their layout conversions."""
    module.to(memory_format=torch.channels_last)


def prepare_pipeline(
    pipe: DiffusionPipeline, settings: Settings, device: str, dtype: torch.dtype
) -> dict[str, Any]:
    """Apply the speed and memory options that pay to the loaded pipeline; returns the metadata
    they set."""
    if settings.sd_tiny_vae:
        pipe.vae = load_tiny_vae(settings.sd_tiny_vae_model, device, dtype)
        # channels_last pays for the tiny decoder on the CPU (12 interleaved decodes: 19 % less
        # CPU time), not for the fp32 UNet or SD decoder; bf16 is not measured (no bf16 CPU here).
        if device == "cpu":
            use_channels_last(pipe.vae)
    if device == "cpu":
        # The images of a job decoded one at a time: as fast on a CPU as the whole batch, and
        # far less memory (4 x 512x512: 6.6 GiB peak instead of 10.0, bench/job_memory.py).
        pipe.vae.enable_slicing()
    return {"use_tiny_auto_encoder": settings.sd_tiny_vae, "dtype": dtype_name(dtype)}
