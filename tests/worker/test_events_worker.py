"""Job events and cancels end to end: the real broker, the real pipeline on the demo model."""

import asyncio
import json
import uuid
from pathlib import Path

import aio_pika
import pytest
from events_support import EventLog
from worker_support import consumer_for, drain, job_files, publish, ready_count, running, wait_for

from sd_webui.cancellation import CancelPublisher
from sd_webui.embedded import EmbeddedQueue, ModelStatus
from sd_webui.events import EventEmitter, EventHub, worker_name
from sd_webui.jobs import Job
from sd_webui.settings import Settings
from sd_webui.worker.consumer import MAX_ATTEMPTS
from sd_webui.worker.pipeline import LoadedModel

pytestmark = pytest.mark.broker


async def publish_job(settings: Settings, **fields: object) -> str:
    job_id = uuid.uuid4().hex
    body = {"id": job_id, "prompt": "green dog", "width": 256, "height": 256, **fields}
    await publish(settings.amqp_url, settings.queue_name, body, message_id=job_id)
    return job_id


async def cancel(settings: Settings, job_id: str) -> None:
    publisher = CancelPublisher(settings.amqp_url or "", settings.cancel_queue)
    await publisher.cancel(job_id)
    await publisher.close()


async def test_a_job_goes_started_progress_done(
    settings: Settings, events: EventLog, loaded_model: LoadedModel
) -> None:
    job_id = await publish_job(settings, steps=4, count=2)
    async with running(consumer_for(settings, loaded_model)):
        seen = await events.until_final(job_id, 60)

    assert [e.state for e in seen] == ["started"] + ["progress"] * 4 + ["done"]
    started, *progress, done = seen
    assert (started.worker, started.attempt) == (worker_name(), 1)
    assert [(e.step, e.steps) for e in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert done.files == [f"{job_id}.json", f"{job_id}-1.png", f"{job_id}-2.png"]
    assert sorted(done.files) == job_files(settings.images_dir, job_id)


async def test_a_failing_job_reports_each_attempt_then_the_reason(
    settings: Settings, events: EventLog, loaded_model: LoadedModel, tmp_path: Path
) -> None:
    """Writing into a folder that is a file fails: started per attempt, then one `failed`."""
    not_a_folder = tmp_path / "images-is-a-file"
    not_a_folder.write_text("")
    broken = settings.model_copy(update={"images_dir": not_a_folder})
    job_id = await publish_job(broken)
    async with running(consumer_for(broken, loaded_model)):
        seen = await events.until_final(job_id, 60)

    states = [(e.state, e.attempt) for e in seen if e.state != "progress"]
    assert states == [("started", n) for n in range(1, MAX_ATTEMPTS + 1)] + [("failed", 3)]
    assert "FileExistsError" in (seen[-1].error or "")


async def test_a_job_cancelled_before_any_worker_is_skipped(
    settings: Settings, events: EventLog, loaded_model: LoadedModel
) -> None:
    """No worker while the cancel is sent; the one started later acks the job, makes nothing."""
    job_id = await publish_job(settings)
    await cancel(settings, job_id)
    async with running(consumer_for(settings, loaded_model)):
        seen = await events.until_final(job_id, 30)

    assert [e.state for e in seen] == ["cancelled"]
    assert job_files(settings.images_dir, job_id) == []
    assert await ready_count(settings.amqp_url, settings.queue_name) == 0
    assert await drain(settings.amqp_url, settings.dead_letter_queue) == []


async def test_cancelling_a_running_job_stops_it_at_the_next_step(
    settings: Settings, events: EventLog, loaded_model: LoadedModel
) -> None:
    job_id = await publish_job(settings, steps=50)
    async with running(consumer_for(settings, loaded_model)):
        await events.until(job_id, {"progress"}, 60)
        await cancel(settings, job_id)
        seen = await events.until_final(job_id, 60)

    assert seen[-1].state == "cancelled"
    assert max(e.step or 0 for e in seen) < 50
    assert job_files(settings.images_dir, job_id) == []
    assert await ready_count(settings.amqp_url, settings.queue_name) == 0


@pytest.mark.parametrize("failure", ["no broker", "exchange of another type"])
async def test_broken_events_never_lose_a_job(
    settings: Settings, loaded_model: LoadedModel, failure: str
) -> None:
    if failure == "no broker":
        emitter = EventEmitter("amqp://guest:guest@127.0.0.1:1/", settings.events_exchange)
    else:  # declaring the topic exchange fails: PRECONDITION_FAILED on the events channel
        connection = await aio_pika.connect(settings.amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.declare_exchange(settings.events_exchange, aio_pika.ExchangeType.FANOUT)
        emitter = EventEmitter(settings.amqp_url or "", settings.events_exchange)
    job_id = await publish_job(settings, steps=2)
    async with running(consumer_for(settings, loaded_model, events=emitter)):
        await wait_for(lambda: len(job_files(settings.images_dir, job_id)) == 2, 60, "the job")
    assert job_files(settings.images_dir, job_id) == [f"{job_id}-1.png", f"{job_id}.json"]
    assert await ready_count(settings.amqp_url, settings.queue_name) == 0


async def test_embedded_queue_sends_the_same_events_and_cancels(
    worker_settings: Settings, images_dir: Path
) -> None:
    """In process: the hub gets started/progress/done; a queued cancel is skipped, a running
    one stops at its next step; `ahead_of` and `snapshot` count the waiting jobs."""
    hub, cancelled = EventHub(), set[str]()
    queue = EmbeddedQueue(worker_settings.model_copy(update={"amqp_url": None}), hub, cancelled)
    log = EventLog(hub)
    first, skipped, stopped = (Job(prompt="green dog", width=256, height=256) for _ in "abc")
    first = first.model_copy(update={"steps": 4})
    stopped = stopped.model_copy(update={"steps": 50})
    await queue.publish([first, skipped, stopped])
    assert [queue.ahead_of(job.id) for job in (first, skipped, stopped)] == [0, 1, 2]
    assert queue.snapshot().waiting == 3 and queue.snapshot().workers == 0
    cancelled.add(skipped.id)
    task = asyncio.create_task(queue.run())
    try:
        seen = await log.until_final(first.id, 60)
        assert queue.status is ModelStatus.READY and queue.snapshot().workers == 1
        assert [e.state for e in seen] == ["started"] + ["progress"] * 4 + ["done"]
        assert [e.state for e in await log.until_final(skipped.id, 10)] == ["cancelled"]
        await log.until(stopped.id, {"progress"}, 30)
        cancelled.add(stopped.id)
        assert (await log.until_final(stopped.id, 30))[-1].state == "cancelled"
    finally:
        task.cancel()
    assert job_files(images_dir, skipped.id) == job_files(images_dir, stopped.id) == []
    assert json.loads((images_dir / f"{first.id}.json").read_text())["inference_steps"] == 4
