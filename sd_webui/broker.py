"""The AMQP side of contract 1: one robust connection per process, queue declarations, and
publishing with publisher confirms."""

import asyncio
import contextlib
import logging

import aio_pika
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aio_pika.connection import make_url
from pamqp import commands, header

from sd_webui.jobs import Job

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
PUBLISH_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 5.0
RECONNECT_MAX_DELAY_S = 30.0


# The one header a message whose own properties could not be decoded carries instead of them.
UNDECODABLE_HEADER = "x-sd-undecodable-properties"
_strict_unmarshal = header.ContentHeader.unmarshal


def _tolerant_unmarshal(self: header.ContentHeader, data: bytes) -> None:
    """ContentHeader.unmarshal that survives properties it cannot decode (see below)."""
    try:
        _strict_unmarshal(self, data)
    except Exception as error:  # whatever hostile bytes make the decoder raise
        if len(data) < 12:  # not even a body size: a broken frame, not a hostile message
            raise
        reason = f"{type(error).__name__}: {error}"[:200]
        self.properties = commands.Basic.Properties(headers={UNDECODABLE_HEADER: reason})


def tolerate_undecodable_properties() -> None:
    """Let a message whose properties this client cannot decode arrive, with UNDECODABLE_HEADER
    in place of its properties, so that its consumer can dead-letter it.

    RabbitMQ passes on any header bytes (a timestamp past the year 9999, a property that is not
    UTF-8), while pamqp decodes them strictly and aiormq then drops the whole connection: the
    broker delivers the same message again, and one publish would stop every consumer in turn.
    Process-wide and idempotent; `connect` calls it.
    """
    header.ContentHeader.unmarshal = _tolerant_unmarshal  # type: ignore[method-assign]


class QueueUnavailable(RuntimeError):
    """The broker could not be reached or did not confirm the message: nothing was queued."""


async def connect(url: str) -> AbstractRobustConnection:
    """A robust connection: once up, it reconnects and restores channels by itself.

    A failed attempt is closed here: aio-pika would otherwise close it from `__del__`, which
    fails with "coroutine never awaited" when the collector runs in a generation thread.
    """
    tolerate_undecodable_properties()
    connection = aio_pika.RobustConnection(make_url(url))
    try:
        await connection.connect(timeout=CONNECT_TIMEOUT_S)
    except BaseException:
        await connection.close()
        raise
    return connection


async def connect_when_up(
    url: str, who: str, stop: asyncio.Event | None = None
) -> AbstractRobustConnection | None:
    """`connect`, retried until the broker answers (it may start after us): waits of 1 s,
    doubling up to RECONNECT_MAX_DELAY_S, each failure logged as `who`. Returns None if `stop`
    is set first; without `stop` it tries until cancelled."""
    delay = 1.0
    while stop is None or not stop.is_set():
        try:
            return await connect(url)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as error:
            log.warning("%s: broker unreachable (%r); retrying in %.0f s", who, error, delay)
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, RECONNECT_MAX_DELAY_S)
    return None


async def close_quietly(connection: aio_pika.abc.AbstractConnection) -> None:
    """Close within CLOSE_TIMEOUT_S, never raising: at shutdown a close can wait forever for a
    broker reply that the connection's cancelled reader will never deliver."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await connection.close()


async def declare_queues(channel: aio_pika.abc.AbstractChannel, queue_name: str) -> None:
    """`tasks` plain durable (any client can declare it), plus `tasks.dead` for rejects."""
    await channel.declare_queue(queue_name, durable=True)
    await channel.declare_queue(f"{queue_name}.dead", durable=True)


def job_message(job: Job) -> aio_pika.Message:
    """The AMQP message of a job: persistent JSON, `message_id` = the job id."""
    return aio_pika.Message(
        job.body(),
        content_type="application/json",
        message_id=job.id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


class Publisher:
    """Publishes jobs on one connection shared by every browser session of the process.

    The connection is opened on first use, so a web app started while the broker is down still
    serves pages; each publish retries the connection until it exists, after which aio-pika's
    robust connection reconnects on its own.
    """

    def __init__(self, url: str, queue_name: str) -> None:
        self.url = url
        self.queue_name = queue_name
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._lock = asyncio.Lock()

    async def _ready_channel(self) -> AbstractRobustChannel:
        async with self._lock:
            if self._channel is None:
                try:
                    connection = await connect(self.url)
                except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as error:
                    raise QueueUnavailable(f"cannot connect to the broker: {error}") from error
                channel = await connection.channel(publisher_confirms=True)
                await declare_queues(channel, self.queue_name)
                self._connection, self._channel = connection, channel
            return self._channel

    async def publish(self, jobs: list[Job]) -> None:
        """Publish every job and wait for the broker's confirms; raises QueueUnavailable."""
        channel = await self._ready_channel()
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                for job in jobs:
                    await channel.default_exchange.publish(
                        job_message(job), routing_key=self.queue_name, mandatory=True
                    )
        except (TimeoutError, aio_pika.exceptions.AMQPError, RuntimeError, OSError) as error:
            log.warning("publish failed: %r", error)
            raise QueueUnavailable(f"the broker did not confirm the job: {error!r}") from error

    async def close(self) -> None:
        if self._connection is not None:
            await close_quietly(self._connection)
        self._connection = self._channel = None
