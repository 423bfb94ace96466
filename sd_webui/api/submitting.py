"""What every door does with a request: queue its jobs for a caller under the pending limit,
and wait for their images."""

import asyncio
import json
import logging
from dataclasses import dataclass

from pydantic import ValidationError

from sd_webui.api.callers import get_callers
from sd_webui.api.errors import ApiError
from sd_webui.api.waiting import until_final
from sd_webui.broker import QueueUnavailable
from sd_webui.events import JobEvent
from sd_webui.jobs import Job
from sd_webui.metadata import FastSDSettings
from sd_webui.publishing import PendingLimit, enqueue
from sd_webui.settings import get_settings

log = logging.getLogger(__name__)


async def queue_for(caller: str, jobs: list[Job]) -> None:
    """Publish the jobs of one request; 429 past the caller's pending limit, 503 when the queue
    is unavailable (nothing is published then)."""
    callers = get_callers()
    ids = [job.id for job in jobs]
    pending = callers.pending(caller)
    callers.add(caller, ids)
    try:
        await enqueue(jobs, pending=pending)
    except PendingLimit as error:
        refusal = ApiError(
            429,
            f"Not queued: this caller has {error}. Wait for some to finish, or cancel some.",
            code="too_many_pending_jobs",
            pending=error.pending,
            limit=error.limit,
        )
    except QueueUnavailable as error:
        refusal = ApiError(
            503, f"The queue is unavailable, nothing was queued: {error}", code="queue_unavailable"
        )
    except BaseException:  # a bug, or the request cancelled: the caller's count stays true
        callers.discard(caller, ids)
        raise
    else:
        callers.queued(ids)
        log.info("API: %s queued %s", caller, " ".join(ids))
        return
    callers.discard(caller, ids)
    raise refusal


@dataclass(frozen=True)
class Finished:
    """A job's end as a synchronous answer needs it: its PNGs and the seed of each."""

    event: JobEvent
    images: list[bytes]
    seeds: list[int]
    infotexts: list[str]  # each PNG's `parameters` text (AUTOMATIC1111's form)


async def wait_for_images(jobs: list[Job]) -> list[Finished]:
    """Each job's final event and, for a done one, its PNGs read from IMAGES_DIR. After
    API_WAIT_S: 504 with the job ids (the jobs go on and land in the gallery)."""
    settings = get_settings()
    ids = [job.id for job in jobs]
    try:
        finals = await until_final(ids, settings.api_wait_s)
    except TimeoutError:
        raise ApiError(
            504,
            f"The images were not ready within API_WAIT_S={settings.api_wait_s:g} s; the jobs go "
            f"on and their images will appear in the gallery: {' '.join(ids)}",
            code="timeout",
            job_ids=ids,
        ) from None
    return [await asyncio.to_thread(read_finished, finals[job_id]) for job_id in ids]


def read_finished(event: JobEvent) -> Finished:
    """The files a `done` event names (JSON sidecar first); nothing for any other end."""
    if event.state != "done":
        return Finished(event, [], [], [])
    folder = get_settings().images_dir
    try:
        images = [(folder / name).read_bytes() for name in event.pngs]
        sidecar = json.loads((folder / f"{event.id}.json").read_bytes())
    except (OSError, ValueError) as error:
        raise ApiError(
            500, f"job {event.id} is done but its files cannot be read: {error}", code="files"
        ) from None
    try:
        record = FastSDSettings.model_validate(sidecar)
    except ValidationError:  # written by another tool: the images without their seeds
        return Finished(event, images, [], [])
    texts = [record.a1111_parameters(index) for index in range(len(record.image_seeds))]
    return Finished(event, images, record.image_seeds[: len(images)], texts[: len(images)])
