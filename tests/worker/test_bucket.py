"""The worker with S3_BUCKET, against a real S3 HTTP server (moto) and the real broker: a job
is acknowledged only once its files are in the bucket; an upload that fails is retried, then
counted as a failed attempt; a worker killed between the upload and the acknowledgement leaves a
job the next worker finds complete; a job that keeps killing its worker ends in `tasks.dead`."""

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from broker_relay import BrokerRelay
from events_support import EventLog
from worker_support import (
    WorkerProcess,
    consumer_for,
    drain,
    publish,
    ready_count,
    running,
    wait_for,
)

from sd_webui.broker import declare_queues
from sd_webui.bucket_mirror import BucketMirror
from sd_webui.events import EventHub, EventSubscriber
from sd_webui.settings import Settings
from sd_webui.worker.consumer import ATTEMPT_HEADER, ERROR_HEADER, WORKER_DIED
from sd_webui.worker.pipeline import LoadedModel
from tests.s3_server import S3Server, client, new_bucket_name

pytestmark = pytest.mark.broker

JOB = {"prompt": "a red boat", "count": 2, "width": 256, "height": 256}


def with_bucket(settings: Settings, server: S3Server, bucket: str, **more: Any) -> Settings:
    return settings.model_copy(update={**server.settings(bucket), **more})


def stored(server: S3Server, bucket: str) -> dict[str, tuple[str, str]]:
    """Each object's ETag and the write time its metadata carries: an upload of a file written
    again changes both."""
    s3 = client(server)
    names = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    found = {}
    for name in names:
        head = s3.head_object(Bucket=bucket, Key=name)
        found[name] = (head["ETag"], head["Metadata"].get("mtime-ns", ""))
    return found


def names_of(job_id: str, count: int) -> set[str]:
    return {f"{job_id}.json", *(f"{job_id}-{index}.png" for index in range(1, count + 1))}


async def publish_job(settings: Settings, **headers: Any) -> str:
    job_id = uuid.uuid4().hex
    await publish(
        settings.amqp_url, settings.queue_name, {**JOB, "id": job_id}, message_id=job_id, **headers
    )
    return job_id


async def test_the_job_is_in_the_bucket_before_it_is_acknowledged(
    worker_settings: Settings, loaded_model: LoadedModel, s3_server: S3Server, bucket_name: str
) -> None:
    """Done means uploaded: the JSON and both PNGs are objects, each carrying when the worker
    wrote it; the pod's own folder is empty again; the sidecar is the contract's."""
    settings = with_bucket(worker_settings, s3_server, bucket_name)
    job_id = await publish_job(settings)
    async with running(consumer_for(settings, loaded_model)):
        await wait_for(lambda: len(stored(s3_server, bucket_name)) == 3, 60, "three objects")
        await wait_for(lambda: not any(settings.images_dir.iterdir()), 10, "an empty folder")
    objects = stored(s3_server, bucket_name)
    assert set(objects) == names_of(job_id, 2)
    assert all(mtime.isdigit() for _, mtime in objects.values())
    record = json.loads(
        client(s3_server).get_object(Bucket=bucket_name, Key=f"{job_id}.json")["Body"].read()
    )
    assert record["number_of_images"] == 2 and record["prompt"] == "a red boat"
    assert await ready_count(settings.amqp_url, settings.queue_name) == 0


async def test_an_endpoint_down_then_back_loses_nothing(
    worker_settings: Settings, loaded_model: LoadedModel
) -> None:
    """The S3 server is down when the job's files are written: the worker holds the job (not
    acknowledged, nothing queued twice) and tries again; once the server is back the job is
    uploaded and acknowledged at its first attempt."""
    server = S3Server()  # its own: this test stops it
    bucket = new_bucket_name()
    settings = with_bucket(worker_settings, server, bucket, s3_upload_retry_s=120.0)
    job_id = await publish_job(settings)
    consumer = consumer_for(settings, loaded_model)
    try:
        async with running(consumer):
            await wait_for(lambda: consumer.held() == 1, 30, "the worker to take the job")
            await wait_for(
                lambda: (settings.images_dir / f"{job_id}-2.png").exists(), 60, "the files"
            )
            await asyncio.sleep(3)  # a few failed tries
            assert (
                consumer.held() == 1
                and await ready_count(settings.amqp_url, settings.queue_name) == 0
            )
            server.start()
            client(server).create_bucket(Bucket=bucket)
            await wait_for(lambda: len(stored(server, bucket)) == 3, 60, "the upload")
            await wait_for(lambda: consumer.held() == 0, 10, "the acknowledgement")
        assert set(stored(server, bucket)) == names_of(job_id, 2)
        assert not any(settings.images_dir.iterdir())
        assert await ready_count(settings.amqp_url, settings.queue_name) == 0
        assert await drain(settings.amqp_url, settings.dead_letter_queue) == []
    finally:
        server.stop()


async def test_an_upload_that_keeps_failing_is_retried_then_dead_lettered(
    worker_settings: Settings, loaded_model: LoadedModel
) -> None:
    """Nothing listens at the endpoint: each attempt's upload fails after S3_UPLOAD_RETRY_S,
    the job is queued again with its attempt raised (the files kept, so it is not generated
    again), and after the third it goes to `tasks.dead` with the reason; the folder is emptied."""
    server = S3Server()  # never started
    settings = with_bucket(worker_settings, server, new_bucket_name(), s3_upload_retry_s=1.0)
    job_id = await publish_job(settings)
    async with running(consumer_for(settings, loaded_model)):
        dead = await wait_for(
            lambda: drain(settings.amqp_url, settings.dead_letter_queue), 120, "the dead letter"
        )
    (message,) = dead
    assert json.loads(message.body)["id"] == job_id
    assert message.headers[ATTEMPT_HEADER] == 3
    assert str(message.headers[ERROR_HEADER]).startswith("upload to the bucket failed: ")
    assert not any(settings.images_dir.iterdir())
    assert await ready_count(settings.amqp_url, settings.queue_name) == 0


async def test_killed_after_the_upload_before_the_ack_the_next_worker_does_not_regenerate(
    worker_settings: Settings, s3_server: S3Server, bucket_name: str, tmp_path: Path
) -> None:
    """The first worker's acknowledgement is held back by a relay; it is killed with -9 once the
    job is in the bucket. The broker delivers the job again; the next worker finds it complete
    in the bucket (its own folder is empty) and acknowledges it without generating or
    uploading it again."""
    settings = with_bucket(worker_settings, s3_server, bucket_name)
    url, queue = settings.amqp_url, settings.queue_name
    job_id = await publish_job(settings)
    relay = BrokerRelay()
    await relay.start()
    environment = {name.upper(): value for name, value in s3_server.settings(bucket_name).items()}
    first = WorkerProcess(
        settings.model_copy(update={"amqp_url": relay.url}), tmp_path / "first.log", **environment
    )
    try:
        await wait_for(lambda: _taken(url, queue, first), 90, "the first worker to take the job")
        relay.hold()
        await wait_for(lambda: len(stored(s3_server, bucket_name)) == 3, 90, "the upload")
        await wait_for(lambda: "outcome=done" in first.log, 10, "the first completion's log line")
    finally:
        first.kill()
        await relay.stop()
    before = stored(s3_server, bucket_name)
    assert set(before) == names_of(job_id, 2)
    await wait_for(lambda: _ready(url, queue, 1), 30, "the broker to requeue the job")

    other_folder = tmp_path / "other-pod"
    other_folder.mkdir()
    second = WorkerProcess(
        settings.model_copy(update={"images_dir": other_folder}),
        tmp_path / "second.log",
        EXIT_AFTER_ONE_TASK="1",
        **environment,
    )
    assert await second.wait(120) == 0, second.log  # one task (EXIT_AFTER_ONE_TASK), then exit
    assert "outcome=already-done" in second.log and "outcome=retry" not in second.log
    assert stored(s3_server, bucket_name) == before
    assert not any(other_folder.iterdir())
    assert await ready_count(url, queue) == 0


async def _taken(url: str, queue: str, worker: WorkerProcess) -> bool:
    assert worker.process.poll() is None, worker.log
    return await ready_count(url, queue) == 0


async def _ready(url: str, queue: str, count: int) -> bool:
    return await ready_count(url, queue) == count


async def die_holding(settings: Settings) -> None:
    """What a worker that dies mid-job does to its delivery, through the broker itself: take the
    next message without acknowledging it and drop the connection. The broker puts it back,
    marked redelivered, with the headers it had."""
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel()
        await declare_queues(channel, settings.queue_name)
        queue = await channel.get_queue(settings.queue_name)
        await wait_for(lambda: queue.get(fail=False), 30, "a message to take")


async def test_a_redelivered_job_counts_as_an_attempt_and_then_runs(
    settings: Settings, loaded_model: LoadedModel, events: EventLog
) -> None:
    """A job whose worker died holding it comes back redelivered: the next worker queues it again
    as attempt 2 (the copy is not redelivered), then runs that copy once."""
    job_id = await publish_job(settings)
    await die_holding(settings)
    async with running(consumer_for(settings, loaded_model)):
        history = await events.until_final(job_id, 60)
    assert [event.attempt for event in history if event.state == "started"] == [2]
    assert history[-1].state == "done"
    assert {path.name for path in settings.images_dir.iterdir()} == names_of(job_id, 2)
    assert await ready_count(settings.amqp_url, settings.queue_name) == 0


async def test_the_third_death_dead_letters_the_job(
    worker_settings: Settings, loaded_model: LoadedModel
) -> None:
    """A job whose worker died at its third attempt (the copy carries attempt 3) goes to
    `tasks.dead` with the reason 'worker died while running it', and runs no fourth time."""
    settings = worker_settings
    job_id = await publish_job(settings, headers={ATTEMPT_HEADER: 3})
    await die_holding(settings)
    async with running(consumer_for(settings, loaded_model)):
        dead = await wait_for(
            lambda: drain(settings.amqp_url, settings.dead_letter_queue), 30, "the dead letter"
        )
    (message,) = dead
    assert json.loads(message.body)["id"] == job_id
    assert message.headers[ERROR_HEADER] == WORKER_DIED
    assert message.headers[ATTEMPT_HEADER] == 3
    assert await ready_count(settings.amqp_url, settings.queue_name) == 0
    assert not any(settings.images_dir.iterdir())


async def test_a_job_reaches_the_web_folder_before_its_done_event(
    settings: Settings,
    loaded_model: LoadedModel,
    s3_server: S3Server,
    bucket_name: str,
    tmp_path: Path,
) -> None:
    """Worker pod to web pod with no shared folder: the worker uploads and acknowledges, the web
    app's subscriber hands its `done` to the mirror, which downloads the files into the web
    folder and only then passes the event to the hub, where a page or an API call reads them."""
    worker = with_bucket(settings, s3_server, bucket_name)
    web = worker.model_copy(update={"images_dir": tmp_path / "web-images"})
    hub = EventHub()
    mirror = BucketMirror(web, hub)
    subscriber = EventSubscriber(web.amqp_url or "", web.events_exchange, mirror)
    tasks = [asyncio.create_task(mirror.run()), asyncio.create_task(subscriber.run())]
    try:
        await asyncio.wait_for(subscriber.ready.wait(), 10)
        job_id = uuid.uuid4().hex
        events = hub.subscribe(job_id)
        await publish(worker.amqp_url, worker.queue_name, {**JOB, "id": job_id}, message_id=job_id)
        async with running(consumer_for(worker, loaded_model)):
            while (event := await asyncio.wait_for(events.get(), 60)).state != "done":
                pass
            landed = {name: (web.images_dir / name).exists() for name in event.files or []}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert set(landed) == names_of(job_id, 2) and all(landed.values())
    assert not any(worker.images_dir.iterdir())
    record = json.loads((web.images_dir / f"{job_id}.json").read_bytes())
    assert record["number_of_images"] == 2
