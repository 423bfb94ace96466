"""`/api/v1`: our own clients' API. Jobs as the page makes them (the same fields, limits and
stop-list), their state from the events the page follows, live as Server-Sent Events, and
every image of the folder in pages."""

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from sd_webui.api.auth import Caller
from sd_webui.api.errors import ApiError, invalid_field
from sd_webui.api.submitting import queue_for
from sd_webui.api.waiting import follow
from sd_webui.broker import QueueUnavailable
from sd_webui.cancellation import publish_cancel
from sd_webui.catalog import MAX_PAGE, BadCursor, decode_cursor, encode_cursor
from sd_webui.events import JobEvent, get_hub
from sd_webui.gallery import get_gallery
from sd_webui.image_files import Entry, landed_job
from sd_webui.jobs import InvalidJob, JobSettings, build_jobs, is_job_id
from sd_webui.metadata import UNKNOWN
from sd_webui.publishing import queue_snapshot
from sd_webui.queue_stats import get_queue_stats
from sd_webui.settings import get_settings
from sd_webui.shared_registry import recall
from sd_webui.state import IMAGE_ROUTE

router = APIRouter(prefix="/api/v1", tags=["jobs"])


class JobRequest(JobSettings):
    """A press of Generate: contract 1's fields, and whether `count` images run in parallel."""

    model_config = ConfigDict(extra="forbid")

    in_parallel: bool = True


class JobStatus(BaseModel):
    """Where a job stands: `step` of `steps` (of image `image` when a job's images run one after
    another) while running, the image URLs once done, the reason once failed."""

    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    worker: str | None = None
    step: int | None = None
    steps: int | None = None
    image: int | None = None
    images: list[str] = []
    error: str | None = None
    updated_at: datetime


class JobsCreated(BaseModel):
    ids: list[str]
    jobs: list[JobStatus]


class ImageItem(BaseModel):
    """One image and what its job's sidecar says (null where it says nothing)."""

    name: str
    url: str
    job_id: str
    created_at: datetime
    prompt: str | None
    negative_prompt: str
    model: str | None
    width: int | None
    height: int | None
    seed: int | None
    steps: int | None
    guidance_scale: float | None


class ImagePage(BaseModel):
    images: list[ImageItem]
    next: str | None  # the `before` of the next page; null on the last


class QueueInfo(BaseModel):
    waiting: int | None  # null: not known now (broker unreachable)
    workers: int | None
    broker_reachable: bool | None  # null in embedded mode (no broker)
    checked_at: datetime | None


def image_url(request: Request, name: str) -> str:
    """The image's absolute URL as the client reached us: behind a TLS-terminating proxy, from
    its X-Forwarded-Proto and -Host (they only shape the caller's own answer)."""
    scheme = request.headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    host = request.headers.get("x-forwarded-host", request.url.netloc).split(",")[0].strip()
    return f"{scheme}://{host}{IMAGE_ROUTE}/{name}"


def job_status(request: Request, event: JobEvent) -> JobStatus:
    state = "running" if event.state in ("started", "progress") else event.state
    return JobStatus(
        id=event.id,
        state=state,
        worker=event.worker,
        step=event.step,
        steps=event.steps,
        image=event.image,
        images=[image_url(request, name) for name in event.pngs],
        error=event.error,
        updated_at=event.at,
    )


async def known(job_id: str) -> JobEvent:
    """The job's latest event; for a job the registry no longer holds (it keeps the last 1000),
    `done` if its files are in the folder; else 404."""
    if not is_job_id(job_id):
        raise ApiError(404, f"{job_id} is not a job id", code="unknown_job")
    latest = get_hub().registry.latest(job_id)
    if latest is None:  # another replica's job, or one from before this process started
        await recall([job_id])
        latest = get_hub().registry.latest(job_id)
    if latest is None:
        landed = await asyncio.to_thread(landed_job, get_settings().images_dir, job_id)
        if landed is not None:
            return JobEvent(id=job_id, state="done", files=landed[1])
        raise ApiError(404, f"no job {job_id} is known to this server", code="unknown_job")
    return latest


@router.post("/jobs", status_code=202, response_model=JobsCreated)
async def create_jobs(body: JobRequest, request: Request, response: Response, who: Caller):
    """Queue one press of Generate: `count` jobs of one image with `in_parallel` (so workers
    share them), else one job of `count`; `Location` is the first job's URL."""
    options = body.model_dump(exclude={"prompt", "count", "in_parallel"}, exclude_none=True)
    try:
        jobs = build_jobs(body.prompt, body.count, body.in_parallel, **options)
    except InvalidJob as error:
        raise invalid_field(error) from None
    await queue_for(who, jobs)
    response.headers["Location"] = f"/api/v1/jobs/{jobs[0].id}"
    statuses = [job_status(request, await known(job.id)) for job in jobs]
    return JobsCreated(ids=[job.id for job in jobs], jobs=statuses)


@router.get("/jobs/{job_id}", response_model=JobStatus)
async def get_job(job_id: str, request: Request, who: Caller):
    return job_status(request, await known(job_id))


@router.delete("/jobs/{job_id}", status_code=202, response_model=JobStatus)
async def cancel_job(job_id: str, request: Request, who: Caller):
    """Cancel, as a card's cancel button: a queued job is skipped, a running one stops at its
    next step; its state turns `cancelled` when a worker says so. A finished job answers 409."""
    latest = await known(job_id)
    if latest.final:
        raise ApiError(409, f"job {job_id} is already {latest.state}", code="finished")
    try:
        await publish_cancel(job_id)
    except QueueUnavailable as error:
        raise ApiError(503, f"Not cancelled: {error}", code="queue_unavailable") from None
    return job_status(request, latest)


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(job_id: str, request: Request, who: Caller):
    """Server-Sent Events: the job's state now, then each change, until it ends (`event:` is
    the state, `data:` a JobStatus); a comment line every 15 s keeps proxies from closing it."""
    latest = await known(job_id)

    async def stream():
        async for event in follow(job_id, latest):
            if event is None:
                yield ": keep-alive\n\n"
                continue
            status = job_status(request, event)
            yield f"event: {status.state}\ndata: {status.model_dump_json()}\n\n"

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def image_item(request: Request, entry: Entry) -> ImageItem:
    info = entry.info
    return ImageItem(
        name=entry.name,
        url=image_url(request, entry.name),
        job_id=entry.job_id,
        created_at=datetime.fromtimestamp(entry.mtime_ns / 1e9, UTC),
        prompt=None if info.prompt == UNKNOWN else info.prompt,
        negative_prompt=info.negative_prompt,
        model=None if info.model == UNKNOWN else info.model,
        width=info.width,
        height=info.height,
        seed=info.seed,
        steps=info.steps,
        guidance_scale=info.guidance_scale,
    )


@router.get("/images", response_model=ImagePage)
async def list_images(
    request: Request,
    who: Caller,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 24,
    before: Annotated[str | None, Query(description="`next` of the previous page")] = None,
):
    """Every image of the folder, newest first, `limit` at a time."""
    try:
        cursor = None if before is None else decode_cursor(before)
    except BadCursor as error:
        raise ApiError(422, f"before: {error}", code="invalid_field", field="before") from None
    catalog = get_gallery().catalog
    keys, next_key = catalog.page(limit, cursor)
    entries = await asyncio.to_thread(catalog.entries, keys)
    return ImagePage(
        images=[image_item(request, entry) for entry in entries],
        next=None if next_key is None else encode_cursor(next_key),
    )


@router.get("/queue", response_model=QueueInfo)
async def queue(who: Caller):
    """Jobs waiting in the queue and workers consuming it, as the page's header shows them."""
    snapshot, stats = queue_snapshot(), get_queue_stats()
    return QueueInfo(
        waiting=None if snapshot is None else snapshot.waiting,
        workers=None if snapshot is None else snapshot.workers,
        broker_reachable=None if stats is None else stats.broker_reachable(),
        checked_at=None if snapshot is None else snapshot.at,
    )
