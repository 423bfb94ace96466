"""The web app's job sink: where Generate sends its jobs.

One seam, `get_sink()`: with `AMQP_URL` set it is the process's RabbitMQ `Publisher` (separate
`sd-worker` processes do the work); without it, the embedded in-process queue and worker, whose
`run()` the app starts as a lifespan task.
"""

from typing import TYPE_CHECKING, Protocol

from sd_webui.broker import Publisher
from sd_webui.jobs import Job
from sd_webui.settings import get_settings

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


def get_embedded_queue() -> "EmbeddedQueue | None":
    """The embedded queue when this process runs one (no `AMQP_URL`), else None."""
    return None if get_settings().amqp_url else get_sink()  # type: ignore[return-value]


def set_sink(sink: JobSink | None) -> None:
    """Install a sink (tests); None goes back to the settings' choice on next use."""
    global _sink
    _sink = sink


async def close_sink() -> None:
    """Lifespan cleanup: close the sink's connection, if one was ever made."""
    if _sink is not None:
        await _sink.close()
