"""Job events, the registry, cancels and queue stats against the real broker (no model)."""

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator

import aio_pika
import pytest
from broker_relay import BrokerRelay
from events_support import EventLog, delete_event_names, following, with_event_names

from sd_webui.cancellation import CancelPublisher, CancelWatcher
from sd_webui.events import EventEmitter, EventHub, EventSubscriber, JobEvent, JobRegistry
from sd_webui.jobs import new_job_id
from sd_webui.queue_stats import QueueStats
from sd_webui.settings import Settings
from tests.worker.worker_support import wait_for


@pytest.fixture
async def settings(amqp_url: str, queue_name: str) -> AsyncIterator[Settings]:
    named = with_event_names(Settings(amqp_url=amqp_url, queue_name=queue_name))
    yield named
    await delete_event_names(named)


def test_event_body_and_routing_key() -> None:
    event = JobEvent(id="ab" * 16, state="progress", step=2, steps=4)
    assert event.routing_key == f"job.{'ab' * 16}.progress"
    body = json.loads(event.body())
    assert {key: body[key] for key in ("id", "state", "step", "steps")} == {
        "id": "ab" * 16,
        "state": "progress",
        "step": 2,
        "steps": 4,
    }
    assert "error" not in body and "worker" not in body  # unset fields are left out
    assert JobEvent.model_validate_json(event.body()) == event


def test_registry_keeps_the_latest_event_of_the_last_jobs() -> None:
    registry = JobRegistry(size=3)
    ids = [new_job_id() for _ in range(5)]
    for job_id in ids:
        registry.record(JobEvent(id=job_id, state="queued"))
    assert len(registry) == 3
    assert [registry.latest(job_id) is None for job_id in ids] == [True, True, False, False, False]
    registry.record(JobEvent(id=ids[2], state="started", worker="w:1"))
    registry.record(JobEvent(id=ids[2], state="queued"))  # late: does not hide `started`
    assert registry.latest(ids[2]).state == "started"
    registry.record(JobEvent(id=new_job_id(), state="queued"))  # ids[2] was used last: kept
    assert registry.latest(ids[2]) is not None and registry.latest(ids[3]) is None
    registry.record(JobEvent(id=ids[2], state="done", files=["x.json"]))
    registry.record(JobEvent(id=ids[2], state="started"))  # a redelivery cannot reopen it
    assert registry.latest(ids[2]).state == "done"


async def test_hub_feeds_its_registry_and_every_subscriber() -> None:
    hub = EventHub(JobRegistry(size=10))
    first, second = hub.subscribe(), hub.subscribe()
    event = JobEvent(id=new_job_id(), state="started")
    hub.publish(event)
    hub.unsubscribe(second)
    hub.publish(JobEvent(id=event.id, state="cancelled"))
    assert [first.get_nowait().state, first.get_nowait().state] == ["started", "cancelled"]
    assert second.qsize() == 1
    assert hub.registry.latest(event.id).state == "cancelled"


async def test_events_emitted_from_a_thread_reach_the_hub(settings: Settings) -> None:
    job_id = new_job_id()
    emitter = EventEmitter(settings.amqp_url or "", settings.events_exchange)
    await emitter.start()
    async with following(settings) as log:
        await asyncio.sleep(0.2)  # the emitter connects in the background

        def generation_thread() -> None:
            for step in (1, 2):
                emitter.emit(JobEvent(id=job_id, state="progress", step=step, steps=2))
            emitter.emit(JobEvent(id=job_id, state="done", files=[f"{job_id}.json"]))

        thread = threading.Thread(target=generation_thread)
        thread.start()
        seen = await log.until_final(job_id, 10)
        thread.join()
    await emitter.close()
    assert [(e.state, e.step) for e in seen] == [("progress", 1), ("progress", 2), ("done", None)]
    assert log.hub.registry.latest(job_id).files == [f"{job_id}.json"]


async def test_malformed_events_are_ignored(settings: Settings) -> None:
    async with following(settings) as log:
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(settings.events_exchange)
            job_id = new_job_id()
            for body in (b"not json", b'{"id": "x"}', JobEvent(id=job_id, state="done").body()):
                await exchange.publish(aio_pika.Message(body), routing_key=f"job.{job_id}.done")
        assert [e.state for e in await log.until_final(job_id, 10)] == ["done"]
        assert len(log.events) == 1


async def publish_events(url: str, exchange_name: str, *events: JobEvent) -> None:
    """Publish as a worker would, straight to the broker."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(exchange_name)
        for event in events:
            await exchange.publish(aio_pika.Message(event.body()), routing_key=event.routing_key)


async def queue_exists(url: str, name: str) -> bool:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return False
        return True


async def test_events_sent_while_the_subscriber_is_cut_off_arrive_after_it_reconnects(
    settings: Settings,
) -> None:
    url, exchange = settings.amqp_url or "", settings.events_exchange
    relay = BrokerRelay()
    await relay.start()
    hub = EventHub()
    subscriber = EventSubscriber(relay.url, exchange, hub)
    task = asyncio.create_task(subscriber.run())
    job_id = new_job_id()
    try:
        await asyncio.wait_for(subscriber.ready.wait(), 10)
        arrived = EventLog(hub)
        await publish_events(url, exchange, JobEvent(id=job_id, state="started"))
        await arrived.until(job_id, {"started"}, 10)
        await relay.stop()  # the web app loses the broker while the worker goes on
        await publish_events(
            url,
            exchange,
            JobEvent(id=job_id, state="progress", step=1, steps=1),
            JobEvent(id=job_id, state="done", files=[f"{job_id}.json"]),
        )
        await relay.start()
        seen = await arrived.until_final(job_id, 30)  # robust reconnect: every 5 s
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await relay.stop()
    assert [event.state for event in seen] == ["started", "progress", "done"]
    assert not await queue_exists(url, subscriber.queue_name)  # a clean stop leaves nothing


async def test_a_watcher_started_after_the_cancel_still_sees_it(settings: Settings) -> None:
    """The stream is read from its first message: cancels older than the worker count."""
    early, late = new_job_id(), new_job_id()
    publisher = CancelPublisher(settings.amqp_url or "", settings.cancel_queue)
    await publisher.cancel(early)
    connection = await aio_pika.connect_robust(settings.amqp_url)
    async with connection:
        watcher = CancelWatcher(settings.cancel_queue)
        await watcher.start(connection)
        assert early in watcher.cancelled  # start() returns only once caught up
        await publisher.cancel(late)
        for _ in range(50):
            if late in watcher.cancelled:
                break
            await asyncio.sleep(0.1)
        assert watcher.cancelled == {early, late}
    await publisher.close()


async def test_queue_stats_follow_a_consumer_starting_and_stopping(settings: Settings) -> None:
    stats = QueueStats(settings.amqp_url or "", settings.queue_name, interval=0.2)
    assert not (await stats.poll()).known  # the queue does not exist yet
    task = asyncio.create_task(stats.run())
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(settings.queue_name, durable=True)
            for _ in range(2):
                await channel.default_exchange.publish(
                    aio_pika.Message(b"{}"), routing_key=settings.queue_name
                )
            await until_stats(stats, waiting=2, workers=0)
            await channel.set_qos(prefetch_count=1)
            held: list[aio_pika.abc.AbstractIncomingMessage] = []

            async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                held.append(message)

            tag = await queue.consume(hold)
            await until_stats(stats, waiting=1, workers=1)  # one message held, unacked
            await queue.cancel(tag)
            await held[0].nack(requeue=True)  # a stopping worker gives its job back
            await until_stats(stats, waiting=2, workers=0)
    finally:
        task.cancel()


async def test_a_refresh_sees_the_queue_of_this_moment(settings: Settings) -> None:
    """A Generate press reads the queue now (its jobs' place in line), even while the loop polls
    at the same time: one shared connection, every answer current, shared through `latest`."""
    stats = QueueStats(settings.amqp_url or "", settings.queue_name, interval=60)
    task = asyncio.create_task(stats.run())  # polls once now, then not for a minute
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(settings.queue_name, durable=True)
            for count in (1, 2, 3):
                await channel.default_exchange.publish(
                    aio_pika.Message(b"{}"), routing_key=settings.queue_name
                )
                seen = await asyncio.gather(*(stats.refresh() for _ in range(4)))
                assert [snapshot.waiting for snapshot in seen] == [count] * 4
                assert stats.latest.waiting == count
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until_stats(stats: QueueStats, waiting: int, workers: int) -> None:
    """Wait for the running poller's `latest` to show these figures."""
    await wait_for(
        lambda: (stats.latest.waiting, stats.latest.workers) == (waiting, workers),
        10,
        f"the stats to show {waiting} waiting and {workers} workers",
    )


async def test_queue_stats_are_unknown_without_a_broker() -> None:
    stats = QueueStats("amqp://guest:guest@127.0.0.1:1/", "tasks", interval=1)
    snapshot = await stats.poll()
    assert (snapshot.known, snapshot.waiting, snapshot.workers) == (False, None, None)
