"""`/v1/images/generations`: OpenAI's image API, for the OpenAI SDKs, LiteLLM and Open WebUI's
"openai" engine. `n` images are `n` one-image jobs (as the page's "in parallel"); `model` is
accepted whatever it names, since the workers run SD_MODEL. Errors are OpenAI-shaped."""

import re
import time
from base64 import b64encode
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from sd_webui.api.auth import Caller
from sd_webui.api.errors import ApiError, invalid_field
from sd_webui.api.jobs_api import image_url
from sd_webui.api.submitting import queue_for, wait_for_images
from sd_webui.jobs import MAX_COUNT, InvalidJob, build_jobs
from sd_webui.settings import get_settings

router = APIRouter(prefix="/v1", tags=["OpenAI"])
SIZE_RE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
DEFAULT_SIZE = (512, 512)  # sd-turbo's own size, also for "auto"


class ImageGenerationRequest(BaseModel):
    """OpenAI's fields; others (quality, style, user, background...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    prompt: str
    model: str | None = None
    n: int = Field(default=1, ge=1, le=MAX_COUNT)
    size: str | None = Field(default=None, description='"WxH" (256-1024, multiples of 8), "auto"')
    response_format: Literal["b64_json", "url"] | None = Field(
        default=None, description="default b64_json"
    )


def parse_size(size: str | None) -> tuple[int, int]:
    if size is None or size == "auto":
        return DEFAULT_SIZE
    match = SIZE_RE.fullmatch(size)
    if match is None:
        raise ApiError(
            422, 'size must be "WIDTHxHEIGHT", e.g. "512x512"', code="invalid_size", field="size"
        )
    return int(match[1]), int(match[2])


@router.post("/images/generations")
async def generate_images(
    body: ImageGenerationRequest, request: Request, who: Caller
) -> dict[str, Any]:
    width, height = parse_size(body.size)
    try:
        jobs = build_jobs(body.prompt, body.n, True, width=width, height=height)
    except InvalidJob as error:
        names = {"width": "size", "height": "size", "count": "n"}
        raise invalid_field(error, names) from None
    await queue_for(who, jobs)
    finished = await wait_for_images(jobs)
    data: list[dict[str, Any]] = []
    for result in finished:
        for name, image in zip(result.event.pngs, result.images, strict=True):
            if body.response_format == "url":
                data.append({"url": image_url(request, name), "revised_prompt": body.prompt})
            else:
                data.append({"b64_json": b64encode(image).decode(), "revised_prompt": body.prompt})
    if not data:
        reasons = "; ".join(f"{r.event.state}: {r.event.error or ''}" for r in finished)
        raise ApiError(500, f"no image was made ({reasons})", code="generation_failed")
    return {
        "created": int(time.time()),
        "data": data,
        "output_format": "png",
        "size": f"{width}x{height}",
    }


@router.get("/models")
async def list_models(who: Caller) -> dict[str, Any]:
    """The one model the workers run, as OpenAI lists models."""
    model = get_settings().sd_model
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": 0, "owned_by": "sd-webui"}],
    }
