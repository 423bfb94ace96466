"""Cancelling jobs: the web app appends `{"id": ...}` to the stream queue `CANCEL_QUEUE`
(default `sd.cancellations`); every worker reads that stream from its first message into a set.

A stream, unlike a queue, is read by every consumer and keeps its messages (here for a day), so
a worker that starts after the cancel, e.g. one KEDA scales up from zero, still sees it.
"""

import asyncio
import json
import logging
import uuid
from functools import lru_cache

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from sd_webui.broker import PUBLISH_TIMEOUT_S, QueueUnavailable, close_quietly, connect
from sd_webui.settings import get_settings

log = logging.getLogger(__name__)

STREAM_ARGUMENTS = {"x-queue-type": "stream", "x-max-age": "1D"}
STREAM_PREFETCH = 100  # a stream consumer must set qos; acks only return credit
CATCH_UP_TIMEOUT_S = 10.0


class JobCancelled(Exception):
    """Raised in the step callback of a job someone cancelled: it stops and writes nothing."""


async def declare_cancel_stream(channel: AbstractChannel, name: str) -> None:
    await channel.declare_queue(name, durable=True, arguments=STREAM_ARGUMENTS)


def _message(body: dict[str, str]) -> aio_pika.Message:
    return aio_pika.Message(
        json.dumps(body).encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


class CancelPublisher:
    """The web app's side: one connection per process, opened on first use."""

    def __init__(self, url: str, stream: str) -> None:
        self.url, self.stream = url, stream
        self._channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._connection: AbstractRobustConnection | None = None
        self._lock = asyncio.Lock()

    async def cancel(self, job_id: str) -> None:
        """Append the cancel to the stream, confirmed; raises QueueUnavailable."""
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                async with self._lock:
                    if self._channel is None:
                        self._connection = await connect(self.url)
                        self._channel = await self._connection.channel(publisher_confirms=True)
                        await declare_cancel_stream(self._channel, self.stream)
                await self._channel.default_exchange.publish(
                    _message({"id": job_id}), routing_key=self.stream
                )
        except (OSError, TimeoutError, RuntimeError, aio_pika.exceptions.AMQPError) as error:
            raise QueueUnavailable(f"the cancel could not be sent: {error!r}") from error

    async def close(self) -> None:
        if self._connection is not None:
            await close_quietly(self._connection)
        self._connection = self._channel = None


class CancelWatcher:
    """The worker's side: reads the whole stream into `cancelled`, then follows it.

    `start()` returns once every cancel older than this worker is in the set: it appends a
    `{"sync": <token>}` marker and waits to read it back, so a job cancelled before the worker
    existed is skipped, not started.
    """

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.cancelled: set[str] = set()
        self._token = uuid.uuid4().hex
        self._caught_up = asyncio.Event()

    async def start(self, connection: AbstractRobustConnection) -> None:
        """Consume on its own channel of `connection`; never raises (a worker without cancels
        still runs jobs)."""
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=STREAM_PREFETCH)
            await declare_cancel_stream(channel, self.stream)
            queue = await channel.get_queue(self.stream)
            await queue.consume(self._on_message, arguments={"x-stream-offset": "first"})
            await channel.default_exchange.publish(
                _message({"sync": self._token}), routing_key=self.stream
            )
            await asyncio.wait_for(self._caught_up.wait(), CATCH_UP_TIMEOUT_S)
        except Exception as error:
            log.warning("cancellations: cannot read %s (%r); jobs run on", self.stream, error)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            body = json.loads(message.body)
        except ValueError:
            body = {}
        if isinstance(body, dict) and isinstance(body.get("id"), str):
            self.cancelled.add(body["id"])
        elif isinstance(body, dict) and body.get("sync") == self._token:
            self._caught_up.set()
        await message.ack()


@lru_cache
def local_cancels() -> set[str]:
    """The cancel set of the embedded queue (no broker: this process is the only worker)."""
    return set()


@lru_cache
def get_cancel_publisher() -> CancelPublisher:
    settings = get_settings()
    return CancelPublisher(settings.amqp_url or "", settings.cancel_queue)


async def publish_cancel(job_id: str) -> None:
    """Cancel a job from the web app, in either mode; raises QueueUnavailable.

    The job's `cancelled` event comes later, from whichever worker next meets it: at once for a
    running job, when a worker receives it for a queued one (none may be running yet).
    """
    if get_settings().amqp_url is None:
        local_cancels().add(job_id)
    else:
        await get_cancel_publisher().cancel(job_id)
