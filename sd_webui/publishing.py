"""The web app's job sink: where Generate sends its jobs.

One seam, `get_sink()`: with `AMQP_URL` set it is the process's RabbitMQ `Publisher`; without
it, the sink that `set_sink()` installed (the embedded in-process queue) or, until one is,
`NoQueue`, which says clearly that nothing can be queued.
"""

from typing import Protocol

from sd_webui.broker import Publisher, QueueUnavailable
from sd_webui.jobs import Job
from sd_webui.settings import get_settings

NO_QUEUE_MESSAGE = "No queue is configured: set AMQP_URL to a RabbitMQ URL to generate images."


class JobSink(Protocol):
    """Anything that queues jobs; `publish` raises QueueUnavailable when nothing was queued."""

    async def publish(self, jobs: list[Job]) -> None: ...

    async def is_reachable(self) -> bool: ...

    async def close(self) -> None: ...


class NoQueue:
    """The sink when no queue exists: every publish fails with a message that says why."""

    async def publish(self, jobs: list[Job]) -> None:
        raise QueueUnavailable(NO_QUEUE_MESSAGE)

    async def is_reachable(self) -> bool:
        return False

    async def close(self) -> None:
        return None


_sink: JobSink | None = None


def get_sink() -> JobSink:
    """The process-wide sink, created on first use (one AMQP connection per process)."""
    global _sink
    if _sink is None:
        settings = get_settings()
        url = settings.amqp_url
        _sink = Publisher(url, settings.queue_name) if url else NoQueue()
    return _sink


def set_sink(sink: JobSink | None) -> None:
    """Install the sink (e.g. the embedded queue); None goes back to the settings' choice."""
    global _sink
    _sink = sink


async def close_sink() -> None:
    """Lifespan cleanup: close the sink's connection, if one was ever made."""
    if _sink is not None:
        await _sink.close()
