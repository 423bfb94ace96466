"""The diffusers pipeline: loaded once per process, then one batched call per job or group."""

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import torch
from diffusers import AutoPipelineForText2Image, DiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from PIL.Image import Image
from transformers.utils import logging as transformers_logging

from sd_webui.jobs import MAX_COUNT, Job
from sd_webui.settings import Settings
from sd_webui.worker.batching import batch_key
from sd_webui.worker.model_source import FIX, ModelSource, ModelUnavailable, first_line
from sd_webui.worker.openvino_backend import use_openvino
from sd_webui.worker.optimize import prepare_pipeline, resolve_dtype

log = logging.getLogger(__name__)

# The warm-up pays the first-call costs (lazy initialisation, allocator, kernel loading) before
# the first real job; at the smallest size contract 1 allows, so start-up stays short on a CPU.
WARM_UP_JOB = Job(prompt="warm-up", width=256, height=256, steps=1)


def resolve_device(setting: str) -> str:
    """`SD_DEVICE`: auto is cuda when torch sees a GPU, else cpu."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise ValueError("SD_DEVICE=cuda but torch sees no CUDA device; set SD_DEVICE=auto or cpu")
    return setting


def job_seeds(job: Job) -> list[int]:
    """One seed per image: seed, seed+1, ... from the job's seed, or else from its id.

    A job without a seed still gets the same seeds at every attempt (a job id is a random uuid,
    so different jobs get different seeds): a redelivered job rewrites the very same pixels
    under names that browsers cache as immutable.
    """
    first = job.seed if job.seed is not None else uuid.UUID(job.id).int % (2**32 - MAX_COUNT)
    return [first + index for index in range(job.count)]


@dataclass(frozen=True)
class LoadedModel:
    """A pipeline ready on its device, and what each job's metadata says about it."""

    pipe: DiffusionPipeline
    model_id: str
    device: str
    metadata: dict[str, Any]

    def generate(
        self, job: Job, on_step: Callable[[int, int], None] | None = None
    ) -> tuple[list[Image], list[int]]:
        """The job's images in one call, and the seed of each."""
        return self.generate_many([job], on_step)[0]

    def generate_many(
        self, jobs: list[Job], on_step: Callable[[int, int], None] | None = None
    ) -> list[tuple[list[Image], list[int]]]:
        """The images and seeds of each job, from one pipeline call for all of them.

        The jobs must share `batch_key` (size, steps, guidance). Each image gets its own prompt
        entry and its own CPU generator, so image i depends on its own seed only, whatever the
        batch or device: any image can be reproduced alone as a count-1 job.
        `on_step(step, steps)` runs after each denoising step (step counts from 1); whatever it
        raises (JobCancelled) ends the call there, before any image is decoded.
        """
        if len({batch_key(job) for job in jobs}) != 1:
            raise ValueError("one pipeline call needs jobs of one size, steps and guidance")

        def step_end(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict:
            if on_step is not None:
                on_step(index + 1, pipe.num_timesteps)
            return {}

        seeds = [job_seeds(job) for job in jobs]
        first = jobs[0]
        with torch.inference_mode():  # as bench/inference.py's fast path
            output = self.pipe(
                prompt=[job.prompt for job in jobs for _ in range(job.count)],
                negative_prompt=[job.negative_prompt for job in jobs for _ in range(job.count)],
                num_inference_steps=first.steps,
                guidance_scale=float(first.guidance_scale),
                width=first.width,
                height=first.height,
                generator=[
                    torch.Generator("cpu").manual_seed(seed) for own in seeds for seed in own
                ],
                callback_on_step_end=step_end,
            )
        images: list[Image] = output.images
        ends = list(accumulate(job.count for job in jobs))
        return [
            (images[end - job.count : end], own)
            for job, own, end in zip(jobs, seeds, ends, strict=True)
        ]


def load_pipeline(settings: Settings, source: ModelSource) -> LoadedModel:
    """Load the model `locate_model(SD_MODEL)` found on `SD_DEVICE`, apply the speed options
    and warm up. Raises ModelUnavailable (one line saying what to set) for any loading error.
    """
    try:
        device = resolve_device(settings.sd_device)
        if settings.sd_backend == "openvino" and device != "cpu":
            raise ValueError(f"SD_BACKEND=openvino runs on the CPU; SD_DEVICE is {device}")
        # With OpenVINO, SD_DTYPE is its precision hint; what stays in torch runs in float32.
        dtype = (
            torch.float32
            if settings.sd_backend == "openvino"
            else resolve_dtype(settings.sd_dtype, device)
        )
    except ValueError as error:
        raise ModelUnavailable(str(error)) from None
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        # diffusers 0.42 and transformers 5 skip the random initialisation and map the
        # safetensors files either way; accelerate's empty-weights path loads no faster and holds
        # no less (bench/model_load.py), so it is not a dependency, and saying so here spares
        # every worker start diffusers' warning that it is missing.
        pipe = AutoPipelineForText2Image.from_pretrained(
            source.name,
            dtype=dtype,
            local_files_only=source.local_files_only,
            low_cpu_mem_usage=False,
        )
    except Exception as error:  # a broken folder fails in many ways; all mean "fix SD_MODEL"
        raise ModelUnavailable(
            f"SD_MODEL={settings.sd_model} could not be loaded ({first_line(error)}); " + FIX
        ) from error
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    metadata = {
        "use_offline_model": source.local_files_only,
        **prepare_pipeline(pipe, settings, device, dtype),
    }
    if settings.sd_backend == "openvino":
        metadata |= use_openvino(pipe, settings)
        metadata["dtype"] = settings.sd_dtype if settings.sd_dtype != "auto" else "openvino-auto"
    model = LoadedModel(pipe=pipe, model_id=settings.sd_model, device=device, metadata=metadata)
    log.info("loaded %s on %s as %s; warming up", settings.sd_model, device, dtype)
    model.generate(WARM_UP_JOB)
    return model
