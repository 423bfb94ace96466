"""`/sdapi/v1`: AUTOMATIC1111's API, as much of it as Open WebUI, SillyTavern and the `webuiapi`
client use, answered truthfully for what runs here.

`txt2img` makes its `batch_size x n_iter` images as that many one-image jobs (so that many
workers can share them; each image depends on its own seed only, so any of them can be made
again alone), waits for them and answers A1111's shape with the seeds the workers used: the
images made (an interrupted request has fewer), or 500 when every job failed. Fields
this service has no use for (samplers, hires fix, scripts) are accepted and ignored; fields
left out take this model's defaults (1 step, CFG 0: sd-turbo's), not A1111's.
"""

import json
import logging
from base64 import b64encode
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field

from sd_webui.api.auth import Caller, caller
from sd_webui.api.callers import get_callers
from sd_webui.api.errors import ApiError, invalid_field
from sd_webui.api.submitting import queue_for, wait_for_images
from sd_webui.broker import QueueUnavailable
from sd_webui.cancellation import publish_cancel
from sd_webui.events import get_hub
from sd_webui.jobs import InvalidJob, Job, build_jobs
from sd_webui.settings import get_settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111"], dependencies=[Depends(caller)])
SAMPLER = "Euler"  # the scheduler sd-turbo's pipeline runs (EulerDiscreteScheduler)
# The A1111 field each contract-1 field comes from, to name it in errors.
A1111_NAMES = {"guidance_scale": "cfg_scale", "count": "batch_size"}


class Txt2ImgRequest(BaseModel):
    """The fields used; any other A1111 field is accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    prompt: str = ""
    negative_prompt: str | None = ""
    seed: int | None = Field(default=-1, ge=-1, description="-1: a new seed per image")
    steps: int | None = Field(default=None, description="default 1")
    cfg_scale: float | None = Field(default=None, description="default 0")
    width: int | None = 512
    height: int | None = 512
    batch_size: int | None = Field(default=1, ge=1)
    n_iter: int | None = Field(default=1, ge=1)


def model_title() -> str:
    """The checkpoint the workers run: SD_MODEL (the web app and the workers share it)."""
    return get_settings().sd_model


def make_jobs(body: Txt2ImgRequest) -> list[Job]:
    """One job per image, seeds seed, seed+1, ... as A1111 numbers a batch's images."""
    total = (body.batch_size or 1) * (body.n_iter or 1)
    limit = get_settings().max_pending_per_session
    if total > limit:
        raise ApiError(
            422,
            f"batch_size x n_iter: at most {limit} images per request (MAX_PENDING_PER_SESSION)",
            code="invalid_field",
            field="batch_size",
        )
    options: dict[str, Any] = {
        "negative_prompt": body.negative_prompt or "",
        "width": body.width if body.width is not None else 512,
        "height": body.height if body.height is not None else 512,
    }
    if body.steps is not None:
        options["steps"] = body.steps
    if body.cfg_scale is not None:
        options["guidance_scale"] = body.cfg_scale
    random_seed = body.seed is None or body.seed == -1
    try:
        return [
            job
            for index in range(total)
            for job in build_jobs(
                body.prompt,
                1,
                False,
                **options,
                **({} if random_seed else {"seed": body.seed + index}),
            )
        ]
    except InvalidJob as error:
        raise invalid_field(error, A1111_NAMES) from None


@router.post("/txt2img")
async def txt2img(body: Txt2ImgRequest, who: Caller) -> dict[str, Any]:
    jobs = make_jobs(body)
    await queue_for(who, jobs)
    finished = await wait_for_images(jobs)
    if all(result.event.state == "failed" for result in finished):
        reasons = "; ".join(sorted({result.event.error or "unknown" for result in finished}))
        raise ApiError(500, f"the generation failed: {reasons}", code="generation_failed")
    images = [image for result in finished for image in result.images]
    seeds = [seed for result in finished for seed in result.seeds]
    first = jobs[0]
    info = {
        "prompt": first.prompt,
        "all_prompts": [first.prompt] * len(images),
        "negative_prompt": first.negative_prompt,
        "all_negative_prompts": [first.negative_prompt] * len(images),
        "seed": seeds[0] if seeds else -1,
        "all_seeds": seeds,
        "subseed": -1,
        "all_subseeds": [-1] * len(seeds),
        "subseed_strength": 0,
        "width": first.width,
        "height": first.height,
        "sampler_name": SAMPLER,
        "cfg_scale": first.guidance_scale,
        "steps": first.steps,
        "batch_size": body.batch_size or 1,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": model_title(),
        "sd_model_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": [text for result in finished for text in result.infotexts],
        "styles": [],
        "job_timestamp": datetime.now(UTC).strftime("%Y%m%d%H%M%S"),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "job_ids": [job.id for job in jobs],
        "states": [result.event.state for result in finished],
    }
    return {
        "images": [b64encode(image).decode() for image in images],
        "parameters": body.model_dump(),
        "info": json.dumps(info),
    }


def idle_progress() -> dict[str, Any]:
    return {
        "progress": 0.0,
        "eta_relative": 0.0,
        "state": {
            "skipped": False,
            "interrupted": False,
            "stopping_generation": False,
            "job": "",
            "job_count": 0,
            "job_timestamp": "0",
            "job_no": 0,
            "sampling_step": 0,
            "sampling_steps": 0,
        },
        "current_image": None,
        "textinfo": None,
    }


@router.get("/progress")
async def progress(who: Caller, skip_current_image: bool = False) -> dict[str, Any]:
    """The caller's current request: the share of its images' steps done, and an ETA from the
    time since its first image started."""
    callers, registry = get_callers(), get_hub().registry
    request = callers.current(who)
    unfinished = [job_id for job_id in request if callers.unfinished(job_id)]
    if not unfinished:
        return idle_progress()
    shares, running = [], None
    for job_id in request:
        latest = registry.latest(job_id)
        if latest is None or latest.final:
            shares.append(1.0)
        elif latest.state == "progress" and latest.steps:
            shares.append((latest.step or 0) / latest.steps)
            running = running or latest
        else:
            shares.append(0.0)
    done = sum(shares) / len(shares)
    starts = [callers.started[job_id] for job_id in request if job_id in callers.started]
    eta = 0.0
    if starts and done > 0:
        elapsed = (datetime.now(UTC) - min(starts)).total_seconds()
        eta = elapsed * (1 - done) / done
    answer = idle_progress()
    answer.update(progress=round(done, 4), eta_relative=round(eta, 2))
    answer["state"].update(
        job=f"job({len(request) - len(unfinished) + 1}/{len(request)})",
        job_count=len(unfinished),
        job_no=len(request) - len(unfinished),
        job_timestamp=min(starts).strftime("%Y%m%d%H%M%S") if starts else "0",
        sampling_step=running.step if running else 0,
        sampling_steps=running.steps if running else 0,
    )
    return answer


async def cancel_current(who: str) -> None:
    callers = get_callers()
    try:
        for job_id in callers.current(who):
            if callers.unfinished(job_id):
                await publish_cancel(job_id)
    except QueueUnavailable as error:
        raise ApiError(503, f"Not interrupted: {error}", code="queue_unavailable") from None


@router.post("/interrupt")
async def interrupt(who: Caller) -> dict[str, Any]:
    """Cancel the caller's current request: its waiting `txt2img` answers with the images done."""
    await cancel_current(who)
    return {}


@router.post("/skip")
async def skip(who: Caller) -> None:
    """As `interrupt` (each image is its own job here: there is no "rest of the batch")."""
    await cancel_current(who)


@router.get("/sd-models")
async def sd_models() -> list[dict[str, Any]]:
    title = model_title()
    return [
        {
            "title": title,
            "model_name": PurePosixPath(title).name,
            "hash": None,
            "sha256": None,
            "filename": title,
            "config": None,
        }
    ]


def current_options() -> dict[str, Any]:
    return {
        "sd_model_checkpoint": model_title(),
        "sd_checkpoint_hash": None,
        "sd_vae": "Automatic",
        "CLIP_stop_at_last_layers": 1,
        "samples_format": "png",
    }


@router.get("/options")
async def get_options() -> dict[str, Any]:
    return current_options()


@router.post("/options")
async def set_options(options: Annotated[dict[str, Any], Body()]) -> None:
    """Accepted; nothing here can change what the workers run, and the log says so."""
    current = current_options()
    for key, value in options.items():
        if key == "sd_model_checkpoint" and value != current[key]:
            log.warning(
                "API: options asked for checkpoint %r; the workers run %r (SD_MODEL), unchanged",
                value,
                current[key],
            )
        elif key not in current or current[key] != value:
            log.info("API: option %s=%r does not apply here; ignored", key, value)


@router.get("/samplers")
async def samplers() -> list[dict[str, Any]]:
    return [{"name": SAMPLER, "aliases": ["k_euler"], "options": {}}]


@router.get("/schedulers")
async def schedulers() -> list[dict[str, Any]]:
    return [
        {
            "name": "automatic",
            "label": "Automatic",
            "aliases": None,
            "default_rho": -1,
            "need_inner_model": False,
        }
    ]


@router.get("/upscalers")
async def upscalers() -> list[dict[str, Any]]:
    return [{"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 1}]


@router.get("/latent-upscale-modes")
async def latent_upscale_modes() -> list[dict[str, Any]]:
    return []


@router.get("/sd-vae")
async def sd_vae() -> list[dict[str, Any]]:
    return []


@router.get("/sd-modules")
async def sd_modules() -> list[dict[str, Any]]:
    return []


@router.get("/loras")
async def loras() -> list[dict[str, Any]]:
    return []


@router.get("/prompt-styles")
async def prompt_styles() -> list[dict[str, Any]]:
    return []


@router.get("/embeddings")
async def embeddings() -> dict[str, Any]:
    return {"loaded": {}, "skipped": {}}


@router.get("/scripts")
async def scripts() -> dict[str, list[str]]:
    return {"txt2img": [], "img2img": []}


@router.post("/refresh-checkpoints")
async def refresh_checkpoints() -> None:
    return None


@router.post("/img2img")
async def img2img() -> None:
    raise ApiError(
        501, "img2img is not offered: this service makes images from text", code="not_supported"
    )


internal = APIRouter(prefix="/internal", tags=["AUTOMATIC1111"])


@internal.get("/ping")
async def ping() -> dict[str, Any]:
    return {}
