"""The cluster at a glance: jobs waiting in `QUEUE_NAME` and workers consuming it.

One poll per web app process every POLL_INTERVAL_S (a passive declare on its own channel), held
here for every session to read, so a thousand open pages cost the broker nothing more than one.
The same poll says whether the broker is reachable now: it is what `/status` and the
`sd_web_broker_up` metric report.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from prometheus_client import Gauge

from sd_webui.broker import CONNECT_TIMEOUT_S, close_quietly
from sd_webui.settings import get_settings

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 3.0

BROKER_UP = Gauge("sd_web_broker_up", "1 when the last poll reached the broker, else 0.")
QUEUE_WAITING = Gauge("sd_web_queue_waiting", "Jobs waiting in QUEUE_NAME at the last poll.")
QUEUE_WORKERS = Gauge("sd_web_queue_workers", "Consumers of QUEUE_NAME at the last poll.")


@dataclass(frozen=True)
class QueueSnapshot:
    """What the last poll saw. `reachable`: the broker answered (the queue may still be missing,
    before anything declared it); figures are None when they could not be read."""

    waiting: int | None = None
    workers: int | None = None
    reachable: bool = False
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def known(self) -> bool:
        return self.waiting is not None

    def age_s(self) -> float:
        return (datetime.now(UTC) - self.at).total_seconds()


class QueueStats:
    """Polls the queue; `latest` is always the newest snapshot (sessions read it)."""

    def __init__(self, url: str, queue_name: str, interval: float = POLL_INTERVAL_S) -> None:
        self.url, self.queue_name, self.interval = url, queue_name, interval
        self.latest = QueueSnapshot()
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._polling = asyncio.Lock()  # the loop and Generate presses share one connection

    async def run(self) -> None:
        """Poll until cancelled (a lifespan task)."""
        try:
            while True:
                await self.refresh()
                await asyncio.sleep(self.interval)
        finally:
            if self._connection is not None:
                await close_quietly(self._connection)

    async def refresh(self) -> QueueSnapshot:
        """Poll now and share what was seen: a Generate press wants the count of this moment
        (its jobs' place in line), not one up to POLL_INTERVAL_S old."""
        self.latest = snapshot = await self.poll()
        BROKER_UP.set(int(snapshot.reachable))
        QUEUE_WAITING.set(float("nan") if snapshot.waiting is None else snapshot.waiting)
        QUEUE_WORKERS.set(float("nan") if snapshot.workers is None else snapshot.workers)
        return snapshot

    def broker_reachable(self) -> bool:
        """Whether the broker answered the latest poll, and that poll is recent (a poll loop
        that stopped would otherwise leave an old "yes" standing)."""
        return self.latest.reachable and self.latest.age_s() < 3 * self.interval

    async def poll(self) -> QueueSnapshot:
        """One passive declare; an unknown snapshot (and a fresh channel next time) on error.

        A plain connection, reopened here when lost: a robust channel would answer a repeated
        declare from its cache, never showing a new count.
        """
        async with self._polling:
            return await self._poll()

    async def _poll(self) -> QueueSnapshot:
        try:
            async with asyncio.timeout(self.interval):
                if self._connection is None or self._connection.is_closed:
                    self._connection = await aio_pika.connect(self.url, timeout=CONNECT_TIMEOUT_S)
                if self._channel is None or self._channel.is_closed:
                    self._channel = await self._connection.channel()
                queue = await self._channel.declare_queue(self.queue_name, passive=True)
        except (OSError, TimeoutError, RuntimeError, aio_pika.exceptions.AMQPError) as error:
            log.debug("queue stats unavailable: %r", error)
            if self._channel is not None:
                with contextlib.suppress(Exception):
                    await self._channel.close()
            self._channel = None
            # A missing queue closes the channel only: the broker itself answered. Anything else
            # may have left a connection that no longer works but does not say it is closed.
            reachable = isinstance(error, aio_pika.exceptions.ChannelNotFoundEntity)
            if not reachable and self._connection is not None:
                await close_quietly(self._connection)
                self._connection = None
            return QueueSnapshot(reachable=reachable)
        result = queue.declaration_result
        return QueueSnapshot(
            waiting=result.message_count, workers=result.consumer_count, reachable=True
        )


@lru_cache
def get_queue_stats() -> QueueStats | None:
    """The process-wide poller with AMQP_URL set (start `run()` in the lifespan); None in
    embedded mode, where `EmbeddedQueue.snapshot()` gives the same figures."""
    settings = get_settings()
    return QueueStats(settings.amqp_url, settings.queue_name) if settings.amqp_url else None
