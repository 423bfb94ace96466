"""Helpers for the job-event tests: per-test exchange and stream names, and a process-side view
of the events (an EventSubscriber feeding its own EventHub), as the web app has."""

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
import pytest

from sd_webui.events import FINAL_STATES, EventHub, EventSubscriber, JobEvent
from sd_webui.settings import Settings


def with_event_names(settings: Settings) -> Settings:
    """The settings with an events exchange and cancel stream of their own."""
    suffix = uuid.uuid4().hex[:12]
    return settings.model_copy(
        update={"events_exchange": f"test-ev-{suffix}", "cancel_queue": f"test-cancel-{suffix}"}
    )


async def delete_event_names(settings: Settings) -> None:
    connection = await aio_pika.connect(settings.amqp_url or "")
    async with connection:
        channel = await connection.channel()
        await channel.exchange_delete(settings.events_exchange)
        await channel.queue_delete(settings.cancel_queue)


class EventLog:
    """Every event the hub passes on, in arrival order, with the loop time it arrived."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self.events: list[JobEvent] = []
        self.arrived: list[float] = []
        self._queue = hub.subscribe()

    async def until(self, job_id: str, states: set[str], seconds: float) -> list[JobEvent]:
        """The job's events up to the first in `states` (fails after `seconds`)."""
        try:
            async with asyncio.timeout(seconds):
                while not any(e.id == job_id and e.state in states for e in self.events):
                    self.events.append(await self._queue.get())
                    self.arrived.append(time.monotonic())
        except TimeoutError:
            pytest.fail(f"no {states} event for {job_id} in {seconds:.0f} s: {self.of(job_id)}")
        return self.of(job_id)

    async def until_final(self, job_id: str, seconds: float) -> list[JobEvent]:
        return await self.until(job_id, set(FINAL_STATES), seconds)

    def of(self, job_id: str) -> list[JobEvent]:
        return [event for event in self.events if event.id == job_id]


@asynccontextmanager
async def following(settings: Settings) -> AsyncIterator[EventLog]:
    """A subscriber on `settings.events_exchange` feeding a fresh hub, for the block."""
    hub = EventHub()
    subscriber = EventSubscriber(settings.amqp_url or "", settings.events_exchange, hub)
    task = asyncio.create_task(subscriber.run())
    await asyncio.wait_for(subscriber.ready.wait(), 10)
    try:
        yield EventLog(hub)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
