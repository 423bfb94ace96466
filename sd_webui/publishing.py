"""The web app's job sink: where Generate sends its jobs.

One seam, `get_sink()`: with `AMQP_URL` set it is the process's RabbitMQ `Publisher` (separate
`sd-worker` processes do the work); without it, the embedded in-process queue and worker, whose
`run()` the app starts as a lifespan task.
"""

from typing import TYPE_CHECKING, Protocol

from sd_webui.broker import Publisher
from sd_webui.events import JobEvent, get_hub
from sd_webui.jobs import Job
from sd_webui.queue_stats import QueueSnapshot, get_queue_stats
from sd_webui.settings import get_settings
from sd_webui.shared_registry import share_now

if TYPE_CHECKING:
    from sd_webui.embedded import EmbeddedQueue


class JobSink(Protocol):
    """Anything that queues jobs; `publish` raises QueueUnavailable when nothing was queued."""

    async def publish(self, jobs: list[Job]) -> None: ...

    async def close(self) -> None: ...


_sink: JobSink | None = None


def get_sink() -> JobSink:
    """The process-wide sink, created on first use (one AMQP connection per process)."""
    global _sink
    if _sink is None:
        settings = get_settings()
        if settings.amqp_url:
            _sink = Publisher(settings.amqp_url, settings.queue_name)
        else:
            # Imported only here: the worker's modules need the model stack, which a web app
            # that only publishes to RabbitMQ (its container image) does not install.
            from sd_webui.embedded import EmbeddedQueue

            _sink = EmbeddedQueue(settings)
    return _sink


class PendingLimit(Exception):
    """Queuing these jobs would take one caller past MAX_PENDING_PER_SESSION: nothing was sent."""

    def __init__(self, pending: int, limit: int) -> None:
        super().__init__(
            f"{pending} unfinished jobs, and at most {limit} may wait or run at a time"
        )
        self.pending, self.limit = pending, limit


async def enqueue(jobs: list[Job], *, pending: int) -> None:
    """Queue the jobs of one request (a press of Generate, an API call) for a caller that has
    `pending` unfinished jobs; each enters the process's EventHub as `queued`, so the registry
    (a reloaded page, the jobs API) knows it, and with REDIS_URL the shared registry too.
    Raises PendingLimit or QueueUnavailable, having published nothing."""
    limit = get_settings().max_pending_per_session
    if pending + len(jobs) > limit:
        raise PendingLimit(pending, limit)
    await get_sink().publish(jobs)
    queued = [JobEvent(id=job.id, state="queued") for job in jobs]
    for event in queued:
        get_hub().publish(event)
    await share_now(queued)  # with several replicas, any of them can answer for these jobs


def get_embedded_queue() -> "EmbeddedQueue | None":
    """The embedded queue when this process runs one (no `AMQP_URL`), else None."""
    return None if get_settings().amqp_url else get_sink()  # type: ignore[return-value]


def queue_snapshot() -> QueueSnapshot | None:
    """The queue's figures as this process knows them now: RabbitMQ's latest poll, or the
    embedded queue itself (None only for a sink that is neither, as tests install)."""
    stats, embedded = get_queue_stats(), get_embedded_queue()
    return stats.latest if stats is not None else embedded.snapshot() if embedded else None


def set_sink(sink: JobSink | None) -> None:
    """Install a sink (tests); None goes back to the settings' choice on next use."""
    global _sink
    _sink = sink


async def close_sink() -> None:
    """Lifespan cleanup: close the sink's connection, if one was ever made."""
    if _sink is not None:
        await _sink.close()
