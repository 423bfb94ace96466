"""Job events: what happens to a job after it is published, for every page that follows it.

Workers publish each event on the durable topic exchange `EVENTS_EXCHANGE` (default `sd.events`)
with routing key `job.<id>.<state>`; each web app process reads them through a queue of its own
bound to `job.#` and hands them to its in-process `EventHub`, which the browser sessions listen
to. The embedded queue publishes into the same hub directly, so pages see one stream either way.
"""

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections import OrderedDict
from collections.abc import Callable, Set
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal, Protocol

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sd_webui.broker import CLOSE_TIMEOUT_S, close_quietly, connect_when_up
from sd_webui.cancellation import JobCancelled

log = logging.getLogger(__name__)

JobState = Literal["queued", "started", "progress", "done", "failed", "cancelled"]
FINAL_STATES: frozenset[str] = frozenset({"done", "failed", "cancelled"})
EMIT_TIMEOUT_S = 5.0
REGISTRY_SIZE = 1000
SESSION_QUEUE_SIZE = 1000
SUBSCRIBER_PREFETCH = 256
SUBSCRIBER_EXPIRES_MS = 10 * 60 * 1000  # an abandoned subscriber queue goes after 10 minutes
SUBSCRIBER_MAX_EVENTS = 10_000  # while disconnected, the oldest events beyond this are dropped


class JobEvent(BaseModel):
    """One step in a job's life; the JSON body of an event message (unset fields omitted)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    state: JobState
    worker: str | None = None  # started: "<hostname>:<pid>" of the worker (or "embedded")
    attempt: int | None = None  # started, failed: 1, then 2, 3 when a generation is retried
    step: int | None = None  # progress: steps finished, 1..steps
    steps: int | None = None  # progress: denoising steps of the job
    image: int | None = None  # progress: 1-based image, None while all images run as one batch
    files: list[str] | None = None  # done: file names, JSON sidecar first
    filtered: list[int] | None = None  # done: 1-based images the safety checker blacked out
    error: str | None = None  # failed: the reason, one line
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def routing_key(self) -> str:
        return f"job.{self.id}.{self.state}"

    @property
    def pngs(self) -> list[str]:
        """done: the image file names, without the JSON sidecar."""
        return [name for name in self.files or [] if name.endswith(".png")]

    @property
    def final(self) -> bool:
        """Nothing follows: the job's card can stop moving."""
        return self.state in FINAL_STATES

    def body(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


def worker_name() -> str:
    """Which worker ran a job: host name (the pod's name under Kubernetes) and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def declare_events_exchange(channel: AbstractChannel, name: str) -> AbstractExchange:
    return await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)


class JobRegistry:
    """The latest event of the last `size` jobs, so a reloaded page can restore its cards
    (with the worker its `started` named, which later events do not repeat).

    A job's final event sticks (a late duplicate cannot reopen it) and `queued` never hides an
    event a worker already sent, whatever order the web app and the broker deliver them in.
    """

    def __init__(self, size: int = REGISTRY_SIZE) -> None:
        self.size = size
        self._latest: OrderedDict[str, JobEvent] = OrderedDict()

    def record(self, event: JobEvent) -> None:
        known = self._latest.get(event.id)
        if known is not None and (known.final or event.state == "queued"):
            return
        if known is not None and known.worker and event.worker is None:
            event = event.model_copy(update={"worker": known.worker})  # who runs it stays known
        self._latest[event.id] = event
        self._latest.move_to_end(event.id)
        while len(self._latest) > self.size:
            self._latest.popitem(last=False)

    def latest(self, job_id: str) -> JobEvent | None:
        return self._latest.get(job_id)

    def __len__(self) -> int:
        return len(self._latest)


class EventHub:
    """In-process pub/sub of job events; call `publish` on the event loop's thread.

    Sessions take a queue of every event with `subscribe()`, an API request one of a single
    job's events with `subscribe(job_id)`, and give it back with `unsubscribe()`; a subscriber
    that falls SESSION_QUEUE_SIZE events behind loses the newest ones rather than slowing others.
    Listeners (plain callables, like the registry) see every event first.
    """

    def __init__(self, registry: JobRegistry | None = None) -> None:
        self.registry = registry if registry is not None else JobRegistry()
        self._listeners: list[Callable[[JobEvent], None]] = [self.registry.record]
        self._queues: set[asyncio.Queue[JobEvent]] = set()
        self._by_job: dict[str, set[asyncio.Queue[JobEvent]]] = {}

    def add_listener(self, listener: Callable[[JobEvent], None]) -> None:
        self._listeners.append(listener)

    def subscribe(self, job_id: str | None = None) -> "asyncio.Queue[JobEvent]":
        queue: asyncio.Queue[JobEvent] = asyncio.Queue(SESSION_QUEUE_SIZE)
        if job_id is None:
            self._queues.add(queue)
        else:
            self._by_job.setdefault(job_id, set()).add(queue)
        return queue

    def unsubscribe(self, queue: "asyncio.Queue[JobEvent]", job_id: str | None = None) -> None:
        if job_id is None:
            self._queues.discard(queue)
        elif (queues := self._by_job.get(job_id)) is not None:
            queues.discard(queue)
            if not queues:
                del self._by_job[job_id]

    def publish(self, event: JobEvent) -> None:
        for listener in self._listeners:
            listener(event)
        for queue in (*self._queues, *self._by_job.get(event.id, ())):
            if queue.full():
                log.warning("a session is %d events behind; dropping %s", queue.qsize(), event.id)
            else:
                queue.put_nowait(event)


@lru_cache
def get_hub() -> EventHub:
    """The process-wide hub (and through `.registry`, the process-wide registry)."""
    return EventHub()


class EventTarget(Protocol):
    """Where the subscriber hands events: the hub, or the bucket mirror in front of it."""

    def publish(self, event: JobEvent) -> None: ...


class EventSubscriber:
    """The web app's side: one queue per process bound to `job.#`, which outlives a lost
    connection so that the events sent meanwhile are delivered after the reconnect.

    The queue is named once per process and is neither exclusive nor auto-delete: when the
    connection to the broker drops, it keeps collecting events (at most SUBSCRIBER_MAX_EVENTS),
    and the robust connection redeclares and consumes the same queue once it is back. The broker
    deletes it SUBSCRIBER_EXPIRES_MS after its last use if the process dies without cleaning up;
    a clean stop deletes it at once. Deliveries are acknowledged after the hub has them.
    """

    def __init__(self, url: str, exchange: str, hub: EventTarget) -> None:
        self.url, self.exchange, self.hub = url, exchange, hub
        self.queue_name = f"{exchange}.web.{socket.gethostname()}.{uuid.uuid4().hex[:8]}"
        self.ready = asyncio.Event()

    async def run(self) -> None:
        """Feed the hub until cancelled (a lifespan task)."""
        connection = await connect_when_up(self.url, "events")
        assert connection is not None  # without `stop`, it returns only once connected
        queue: AbstractQueue | None = None
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=SUBSCRIBER_PREFETCH)
            exchange = await declare_events_exchange(channel, self.exchange)
            queue = await channel.declare_queue(
                self.queue_name,
                arguments={
                    "x-expires": SUBSCRIBER_EXPIRES_MS,
                    "x-max-length": SUBSCRIBER_MAX_EVENTS,
                },
            )
            await queue.bind(exchange, routing_key="job.#")
            await queue.consume(self._on_message)
            self.ready.set()
            await asyncio.Future()  # until cancelled
        finally:
            if queue is not None:  # best effort, bounded: otherwise x-expires removes it later
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        await queue.delete(if_unused=False, if_empty=False)
            await close_quietly(connection)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            event = JobEvent.model_validate_json(message.body)
        except ValidationError as error:
            log.warning("events: ignoring a malformed event: %s", error.errors()[0]["msg"])
        else:
            self.hub.publish(event)
        await message.ack()


class EventEmitter:
    """The worker's side: `emit()` from any thread, never blocking or failing the job.

    Events go out on their own connection, without publisher confirms; an unreachable broker,
    a missing or broken exchange or a slow publish only costs the event (logged), never the job.
    """

    def __init__(self, url: str, exchange: str) -> None:
        self.url, self.exchange_name = url, exchange
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._opener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and declare the exchange in the background; call on the worker's loop."""
        self._loop = asyncio.get_running_loop()
        self._opener = self._loop.create_task(self._open())

    async def _open(self) -> None:
        self._connection = await connect_when_up(self.url, "events (jobs run on without them)")
        assert self._connection is not None  # without `stop`, it returns only once connected
        try:
            channel = await self._connection.channel(publisher_confirms=False)
            self._exchange = await declare_events_exchange(channel, self.exchange_name)
        except Exception as error:
            log.warning("events: exchange %s unusable (%r); jobs run on", self.exchange_name, error)

    def emit(self, event: JobEvent) -> None:
        """Hand the event to the loop and return at once (thread-safe)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._send, event)
        except RuntimeError:  # the loop closed between the check and the call
            return

    def _send(self, event: JobEvent) -> None:
        connection, exchange = self._connection, self._exchange
        if exchange is None or connection is None or not connection.connected.is_set():
            if event.state != "progress":
                log.warning("events: not connected; dropped %s", event.routing_key)
            return
        task = asyncio.get_running_loop().create_task(self._publish(exchange, event))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, exchange: AbstractExchange, event: JobEvent) -> None:
        message = aio_pika.Message(event.body(), content_type="application/json")
        try:
            async with asyncio.timeout(EMIT_TIMEOUT_S):
                # Not mandatory: with no web app listening, the broker drops events silently.
                await exchange.publish(message, routing_key=event.routing_key, mandatory=False)
        except Exception as error:
            log.warning("events: could not publish %s: %r", event.routing_key, error)

    async def close(self) -> None:
        """Let the events in flight go out (briefly), then close the connection."""
        if self._opener is not None:
            self._opener.cancel()
        if self._pending:
            await asyncio.wait(self._pending, timeout=EMIT_TIMEOUT_S)
        if self._connection is not None:
            await close_quietly(self._connection)


def step_reporter(
    job_id: str, emit: Callable[[JobEvent], None], cancelled: Set[str]
) -> Callable[[int, int], None]:
    """The `on_step` a worker gives JobRunner.run: a progress event per step, and JobCancelled
    at the first step after the job's id appears in `cancelled`."""

    def on_step(step: int, steps: int) -> None:
        if job_id in cancelled:
            raise JobCancelled(job_id)
        emit(JobEvent(id=job_id, state="progress", step=step, steps=steps))

    return on_step
