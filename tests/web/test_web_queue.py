"""Generate against the real RabbitMQ: exact messages, parallel splitting, a broker going away."""

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest
from broker_relay import BrokerRelay

from sd_webui.broker import Publisher
from sd_webui.embedded import EmbeddedQueue, ModelStatus
from sd_webui.jobs import NSFW_WARNING
from sd_webui.publishing import get_embedded_queue, get_sink, set_sink
from sd_webui.settings import get_settings
from sd_webui.state import submit
from tests.worker.worker_support import drain

pytestmark = pytest.mark.broker


@pytest.fixture
async def publisher(amqp_url: str, queue_name: str) -> AsyncIterator[Publisher]:
    """The process's sink, as the page uses it through `get_sink()`."""
    sink = Publisher(amqp_url, queue_name)
    set_sink(sink)
    yield sink
    set_sink(None)
    await sink.close()


async def test_a_job_lands_with_exact_body_and_properties(
    publisher: Publisher, amqp_url: str, queue_name: str
) -> None:
    assert (await submit("green dog", 2, in_parallel=False))[:2] == (
        "success",
        "The task was added to the job queue (2 images).",
    )
    (message,) = await drain(amqp_url, queue_name)
    body = json.loads(message.body)
    assert (body["prompt"], body["count"]) == ("green dog", 2)
    assert message.message_id == body["id"]
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert set(body) == {
        "prompt", "count", "id", "negative_prompt", "width", "height", "steps",
        "guidance_scale", "submitted_at",
    }  # fmt: skip


async def test_in_parallel_publishes_one_message_per_image(
    publisher: Publisher, amqp_url: str, queue_name: str
) -> None:
    level, *_ = await submit("red fox", 3, in_parallel=True)
    assert level == "success"
    bodies = [json.loads(message.body) for message in await drain(amqp_url, queue_name)]
    assert [(body["prompt"], body["count"]) for body in bodies] == [("red fox", 1)] * 3
    assert len({body["id"] for body in bodies}) == 3


@pytest.mark.parametrize(
    ("prompt", "count", "level", "says"),
    [
        ("a nude statue", 1, "warning", NSFW_WARNING),
        ("   ", 1, "info", "Type a prompt first."),
        ("green dog", 9, "error", "count"),
        ("green dog", 0, "error", "count"),
        ("x" * 1001, 1, "error", "at most 1000 characters"),
    ],
)
async def test_refused_prompts_publish_nothing(
    publisher: Publisher,
    amqp_url: str,
    queue_name: str,
    prompt: str,
    count: int,
    level: str,
    says: str,
) -> None:
    got_level, message, _ = await submit(prompt, count, in_parallel=True)
    assert (got_level, says in message) == (level, True)
    assert await drain(amqp_url, queue_name) == []


async def test_dead_port_gives_queue_unavailable(queue_name: str) -> None:
    sink = Publisher("amqp://guest:guest@127.0.0.1:1/", queue_name)
    set_sink(sink)
    try:
        level, message, _ = await submit("green dog", 1, in_parallel=True)
    finally:
        set_sink(None)
    assert level == "error"
    assert message.startswith("The queue is unavailable, nothing was sent.")


async def test_without_amqp_url_jobs_go_to_the_embedded_queue(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No AMQP_URL: the embedded queue; a model that cannot load turns Generate into a clear
    error that says what to set, and nothing is queued."""
    monkeypatch.delenv("AMQP_URL", raising=False)
    monkeypatch.setenv("SD_MODEL", str(tmp_path / "no-such-model"))
    get_settings.cache_clear()
    set_sink(None)
    try:
        queue = get_sink()
        assert isinstance(queue, EmbeddedQueue)
        assert get_embedded_queue() is queue
        await asyncio.wait_for(queue.run(), 30)
        assert queue.status is ModelStatus.FAILED
        level, message, _ = await submit("green dog", 1, in_parallel=True)
        assert level == "error"
        assert "The model could not be loaded" in message
        assert "set SD_MODEL" in message
        assert queue.waiting() == 0
    finally:
        set_sink(None)
        get_settings.cache_clear()


async def test_the_broker_going_away_and_coming_back_needs_no_restart(
    amqp_url: str, queue_name: str
) -> None:
    relay = BrokerRelay()
    await relay.start()
    sink = Publisher(relay.url, queue_name)
    set_sink(sink)
    try:
        assert (await submit("before", 1, in_parallel=True))[0] == "success"
        await relay.stop()
        level, message, _ = await submit("during", 1, in_parallel=True)
        assert level == "error"
        assert "queue is unavailable" in message
        await relay.start()
        for _ in range(60):  # aio-pika's robust connection retries every 5 s
            if (await submit("after", 1, in_parallel=True))[0] == "success":
                break
            await asyncio.sleep(0.5)
        else:
            pytest.fail("the publisher did not recover once the broker was back")
    finally:
        set_sink(None)
        await sink.close()
        await relay.stop()
    prompts = [json.loads(message.body)["prompt"] for message in await drain(amqp_url, queue_name)]
    assert prompts[0] == "before"
    assert prompts[-1] == "after"
    assert "during" not in prompts
