"""Settling is total: whatever a delivery holds, the worker runs it or dead-letters it, and goes
on with the next. Property-based over bodies, headers and ids, through the real consumer and
the real broker; then the two bodies that used to stall a worker, through a worker process."""

import json
import string
import struct
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pamqp.encode
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from worker_support import (
    WorkerProcess,
    consumer_for,
    drain,
    http_get,
    publish,
    ready_count,
    running,
    wait_for,
)

from sd_webui.jobs import InvalidJob, decode_job
from sd_webui.metadata import FastSDSettings
from sd_webui.settings import Settings
from sd_webui.worker.consumer import ERROR_HEADER, Consumer
from sd_webui.worker.metrics import OUTCOMES
from sd_webui.worker.pipeline import LoadedModel, job_seeds
from tests.conftest import free_port

pytestmark = pytest.mark.broker

# The two bodies that stalled every worker: json.loads raised ValueError (an integer of more
# digits than Python converts) and RecursionError (nesting), not JSONDecodeError.
HUGE_NUMBER = b'{"prompt": "green dog", "count": ' + b"9" * 5001 + b"}"
DEEP_NESTING = b"[" * 100_000 + b"]" * 100_000
FINAL = tuple(outcome for outcome in OUTCOMES if outcome != "retry")

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Bodies that look like jobs, with any value in any field: small sizes, so the valid ones
# generate quickly on the demo model.
JOBISH = st.fixed_dictionaries(
    {"prompt": st.text(max_size=30) | JSON},
    optional={
        "count": st.integers(-1, 5) | JSON,
        "id": st.uuids().map(lambda value: value.hex) | JSON,
        "seed": st.integers(-1, 2**32) | JSON,
        "width": st.just(256) | JSON,
        "height": st.just(256) | JSON,
        "steps": st.integers(0, 2) | JSON,
        "negative_prompt": st.text(max_size=20) | JSON,
        "submitted_at": st.datetimes().map(str) | JSON,
    },
).map(lambda job: {"width": 256, "height": 256, **job})
BODIES = (
    st.binary(max_size=200)
    | JSON.map(lambda value: json.dumps(value).encode())
    | JOBISH.map(lambda job: json.dumps(job).encode())
    | st.sampled_from([HUGE_NUMBER, DEEP_NESTING, b"", b"\xff" * 10, b'{"prompt": "\\ud800"}'])
)
# Every type of an AMQP field table that aio-pika sends (its floats are 32-bit, bytes it
# refuses) and the broker takes (an infinite or NaN float closes the connection).
HEADER_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=20)
    | st.decimals(min_value=-(10**6), max_value=10**6, places=2, allow_nan=False)
    | st.datetimes(datetime(1970, 1, 2), datetime(2100, 1, 1), timezones=st.just(UTC)),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(string.ascii_letters, max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
HEADERS = st.dictionaries(
    st.sampled_from(["x-attempt", "x-error", "x-death", "x-first-death-reason", "CC", "BCC"])
    | st.text(min_size=1, max_size=16),
    HEADER_VALUES,
    max_size=4,
)
MESSAGE_IDS = st.none() | st.text(max_size=40) | st.uuids().map(lambda value: value.hex)


def settled_total() -> float:
    """Messages that reached an end: done, already done, failed, invalid or cancelled."""
    return sum(
        REGISTRY.get_sample_value("sd_worker_jobs_total", {"outcome": outcome}) or 0.0
        for outcome in FINAL
    )


@given(body=BODIES)
@settings(max_examples=300, deadline=None)
def test_a_body_is_a_job_or_a_reason(body: bytes) -> None:
    """Decoding never raises anything but InvalidJob, and a job it accepts can be published and
    recorded (its sidecar written)."""
    try:
        job = decode_job(body)
    except InvalidJob as error:
        assert str(error)
        return
    assert decode_job(job.body()) == job
    FastSDSettings.for_job(job, model_id="m", seeds=job_seeds(job)).to_json()


@pytest.fixture
async def consumer(worker_settings: Settings, loaded_model: LoadedModel) -> AsyncIterator[Consumer]:
    async with running(consumer_for(worker_settings, loaded_model)) as consumer:
        await wait_for(consumer.is_ready, 10, "the consumer")
        yield consumer


@pytest.fixture
async def connection(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        yield connection


@given(body=BODIES, headers=HEADERS, message_id=MESSAGE_IDS)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
async def test_every_delivery_is_settled(
    consumer: Consumer,
    connection: aio_pika.abc.AbstractConnection,
    worker_settings: Settings,
    body: bytes,
    headers: dict[str, Any],
    message_id: str | None,
) -> None:
    """Each message reaches exactly one end (run, or dead-lettered with a reason) within
    seconds, and the worker holds nothing afterwards: the next one is never blocked."""
    before = settled_total()
    message = aio_pika.Message(body, headers=headers, message_id=message_id)
    async with connection.channel(publisher_confirms=True) as channel:
        try:
            await channel.default_exchange.publish(message, routing_key=worker_settings.queue_name)
        except aio_pika.exceptions.ChannelPreconditionFailed:
            reject()  # the broker refused it (a CC or BCC header that is not a list): no delivery
    await wait_for(lambda: settled_total() == before + 1, 30, "the message to be settled")
    await wait_for(lambda: consumer.held() == 0, 10, "nothing held")
    assert consumer.stalled() is None
    for dead in await drain(worker_settings.amqp_url, worker_settings.dead_letter_queue):
        assert dead.body == body and dead.headers[ERROR_HEADER]


FAR_FUTURE = datetime(2001, 1, 1, tzinfo=UTC)  # a marker: sent as a timestamp past year 9999


async def publish_undecodable_header(
    amqp_url: str, queue: str, body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message whose `headers` hold a timestamp of 2**50 (ms): any 64-bit value is valid on
    the wire and RabbitMQ passes it on, but pamqp cannot decode it into a datetime. aio-pika
    would never send one, so its encoder is made to, for this publish only."""
    strict = pamqp.encode.timestamp

    def far_future(value: datetime) -> bytes:
        return struct.pack(">Q", 2**50) if value == FAR_FUTURE else strict(value)

    with monkeypatch.context() as patch:
        patch.setattr(pamqp.encode, "timestamp", far_future)
        await publish(amqp_url, queue, body, headers={"when": FAR_FUTURE})


async def test_the_bodies_that_stalled_workers_are_dead_lettered(
    worker_settings: Settings, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through a worker process: both go to the dead letter queue with a reason, and so does a
    message with a header no client can decode (it used to drop the worker's connection, again
    at every redelivery); the good job after them is done, and the worker stays alive and
    ready."""
    url, queue, folder = (
        worker_settings.amqp_url,
        worker_settings.queue_name,
        worker_settings.images_dir,
    )
    good = uuid.uuid4().hex
    for body in (HUGE_NUMBER, DEEP_NESTING):
        await publish(url, queue, body, message_id=uuid.uuid4().hex)
    undecodable = json.dumps({"prompt": "green dog", "id": uuid.uuid4().hex}).encode()
    await publish_undecodable_header(url, queue, undecodable, monkeypatch)
    await publish(url, queue, {"id": good, "prompt": "green dog", "width": 256, "height": 256})
    port = free_port()
    worker = WorkerProcess(worker_settings, tmp_path / "worker.log", METRICS_PORT=str(port))
    try:
        await wait_for(lambda: (folder / f"{good}-1.png").exists(), 120, "the good job")
        base = f"http://127.0.0.1:{port}"
        assert await wait_for(lambda: http_get(f"{base}/readyz")[0] == 200, 10, "ready")
        assert http_get(f"{base}/healthz")[0] == 200
    finally:
        worker.kill()
    dead = await drain(url, worker_settings.dead_letter_queue)
    assert [message.body for message in dead] == [HUGE_NUMBER, DEEP_NESTING, undecodable]
    for message in dead[:2]:
        assert "not valid UTF-8 JSON" in message.headers[ERROR_HEADER]
    reason = dead[2].headers[ERROR_HEADER]
    assert reason.startswith("the message's properties could not be decoded"), reason
    assert "year 37648 is out of range" in reason
    assert await ready_count(url, queue) == 0
    assert "could not settle" not in worker.log
