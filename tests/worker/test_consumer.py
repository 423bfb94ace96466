"""The worker in this process: real RabbitMQ, the real diffusers pipeline on the demo model."""

import asyncio
import json
import uuid
from pathlib import Path

import numpy as np
import pika
import pytest
from PIL import Image
from prometheus_client import REGISTRY
from worker_support import (
    consumer_for,
    drain,
    http_get,
    job_files,
    publish,
    publish_bare,
    ready_count,
    running,
    wait_for,
)

from sd_webui.metadata import FastSDSettings
from sd_webui.settings import Settings
from sd_webui.worker.consumer import ATTEMPT_HEADER, ERROR_HEADER, MAX_ATTEMPTS
from sd_webui.worker.health import serve_health
from sd_webui.worker.pipeline import LoadedModel
from tests.conftest import free_port

pytestmark = pytest.mark.broker


def jobs_total(outcome: str) -> float:
    return REGISTRY.get_sample_value("sd_worker_jobs_total", {"outcome": outcome}) or 0.0


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


async def test_old_format_message_gives_images_and_sidecar(
    worker_settings: Settings, loaded_model: LoadedModel, demo_model: Path
) -> None:
    """`{"prompt", "count"}` from the original web UI, with no message_id either: given an id
    (queued again once), then N PNGs with their recipe and one JSON."""
    folder = worker_settings.images_dir
    done_before = jobs_total("done")
    body = {"prompt": "green dog", "count": 2}
    await asyncio.to_thread(
        publish_bare, worker_settings.amqp_url, worker_settings.queue_name, body
    )
    async with running(consumer_for(worker_settings, loaded_model)):
        await wait_for(lambda: len(list(folder.glob("*.png"))) == 2, 60, "two images")
        await wait_for(lambda: jobs_total("done") == done_before + 1, 10, "the ack")

    (sidecar,) = folder.glob("*.json")
    job_id = sidecar.stem
    assert len(job_id) == 32 and int(job_id, 16) >= 0
    assert job_files(folder, job_id) == [f"{job_id}-1.png", f"{job_id}-2.png", f"{job_id}.json"]
    record = json.loads(sidecar.read_text())
    settings = FastSDSettings.model_validate(record)
    assert record["prompt"] == "green dog"
    assert record["lcm_model_id"] == str(demo_model)
    assert (record["image_width"], record["image_height"]) == (512, 512)
    assert record["inference_steps"] == 1 and record["guidance_scale"] == 0.0
    assert record["number_of_images"] == 2 and record["use_seed"] is True
    first_seed = record["seed"]
    assert record["image_seeds"] == [first_seed, first_seed + 1]
    for index in (1, 2):
        image = Image.open(folder / f"{job_id}-{index}.png")
        assert image.size == (512, 512)
        parameters = image.info["parameters"]
        assert parameters == settings.a1111_parameters(index - 1)
        assert parameters.startswith("green dog\nNegative prompt: \nSteps: 1, ")
        assert f"Seed: {first_seed + index - 1}, Size: 512x512, Model: {demo_model}" in parameters
    assert await ready_count(worker_settings.amqp_url, worker_settings.queue_name) == 0


async def test_message_id_names_the_files_of_a_body_without_id(
    worker_settings: Settings, loaded_model: LoadedModel
) -> None:
    """A redelivered old-format message must rewrite the same names, so its id is stable."""
    job_id = uuid.uuid4().hex
    body = {"prompt": "blue cat", "width": 256, "height": 256}
    await publish(worker_settings.amqp_url, worker_settings.queue_name, body, message_id=job_id)
    async with running(consumer_for(worker_settings, loaded_model)):
        await wait_for(
            lambda: (worker_settings.images_dir / f"{job_id}-1.png").exists(), 60, "the image"
        )
    assert job_files(worker_settings.images_dir, job_id) == [f"{job_id}-1.png", f"{job_id}.json"]


async def test_seeded_message_reproduces_pixels(
    worker_settings: Settings, loaded_model: LoadedModel
) -> None:
    folder = worker_settings.images_dir
    recipe = {
        "prompt": "a red cat",
        "negative_prompt": "blurry",
        "count": 2,
        "seed": 1234,
        "width": 256,
        "height": 320,
        "steps": 2,
        "guidance_scale": 1.5,
    }
    first, again, alone = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    for job_id, extra in ((first, {}), (again, {}), (alone, {"count": 1, "seed": 1235})):
        body = {**recipe, "id": job_id, **extra}
        await publish(worker_settings.amqp_url, worker_settings.queue_name, body)
    async with running(consumer_for(worker_settings, loaded_model)):
        await wait_for(lambda: (folder / f"{alone}-1.png").exists(), 90, "three jobs")

    record = json.loads((folder / f"{first}.json").read_text())
    assert record["image_seeds"] == [1234, 1235] and record["seed"] == 1234
    assert record["negative_prompt"] == "blurry" and record["guidance_scale"] == 1.5
    for index in (1, 2):
        assert np.array_equal(
            pixels(folder / f"{first}-{index}.png"), pixels(folder / f"{again}-{index}.png")
        )
    assert not np.array_equal(pixels(folder / f"{first}-1.png"), pixels(folder / f"{first}-2.png"))
    # Each image has its own generator: image 2 of the batch is the count-1 job with its seed,
    # up to the rounding of a batched convolution.
    difference = np.abs(pixels(folder / f"{first}-2.png") - pixels(folder / f"{alone}-1.png"))
    assert difference.max() <= 2
    assert pixels(folder / f"{alone}-1.png").shape == (320, 256, 3)


BAD_MESSAGES = [
    (b"green dog", "not valid UTF-8 JSON"),
    (b"\xff\xfe{}", "not valid UTF-8 JSON"),
    (b'["green dog", 2]', "must be a JSON object"),
    (b'"green dog"', "must be a JSON object"),
    (b'{"count": 1}', "prompt"),
    (b'{"prompt": 42, "count": 1}', "prompt"),
    (b'{"prompt": "green dog", "count": "2"}', "count"),
    (json.dumps({"prompt": "x" * 1001}).encode(), "prompt"),
    (b'{"prompt": "green dog", "count": 1000}', "count"),
    (b'{"prompt": "   "}', "prompt"),
    (b'{"prompt": "green dog", "width": 300}', "width"),
    (b'{"prompt": "green dog", "seed": -1}', "seed"),
    (b'{"prompt": "green dog", "count": 4, "width": 1024, "height": 1024}', "MAX_JOB_UNITS"),
]


async def test_bad_messages_go_to_dead_letter_queue_and_good_ones_complete(
    worker_settings: Settings, loaded_model: LoadedModel
) -> None:
    worker_settings = worker_settings.model_copy(update={"max_job_units": 32.0})  # as Kubernetes
    url, queue, folder = (
        worker_settings.amqp_url,
        worker_settings.queue_name,
        worker_settings.images_dir,
    )
    before, after = uuid.uuid4().hex, uuid.uuid4().hex
    small = {"prompt": "green dog", "width": 256, "height": 256}
    await publish(url, queue, {**small, "id": before})
    for body, _ in BAD_MESSAGES:
        await publish(url, queue, body)
    await publish(url, queue, {**small, "id": after})
    invalid_before = jobs_total("invalid")
    async with running(consumer_for(worker_settings, loaded_model)):
        await wait_for(
            lambda: (folder / f"{after}-1.png").exists(), 60, "the job after the bad ones"
        )
        await wait_for(
            lambda: jobs_total("invalid") == invalid_before + len(BAD_MESSAGES), 10, "dead letters"
        )

    assert (folder / f"{before}-1.png").exists()
    dead = await drain(url, worker_settings.dead_letter_queue)
    assert [message.body for message in dead] == [body for body, _ in BAD_MESSAGES]
    for message, (_, reason) in zip(dead, BAD_MESSAGES, strict=True):
        assert reason in message.headers[ERROR_HEADER], message.headers
    assert await ready_count(url, queue) == 0


async def test_generation_error_is_retried_then_dead_lettered(
    worker_settings: Settings, loaded_model: LoadedModel, tmp_path: Path
) -> None:
    """Writing into a folder that is a file fails every time: 3 attempts, then `tasks.dead`."""
    not_a_folder = tmp_path / "images-is-a-file"
    not_a_folder.write_text("")
    settings = worker_settings.model_copy(update={"images_dir": not_a_folder})
    job_id = uuid.uuid4().hex
    body = json.dumps({"id": job_id, "prompt": "green dog", "width": 256, "height": 256}).encode()
    await publish(settings.amqp_url, settings.queue_name, body, message_id=job_id)
    retries, failures = jobs_total("retry"), jobs_total("failed")
    async with running(consumer_for(settings, loaded_model)):
        await wait_for(lambda: jobs_total("failed") == failures + 1, 60, "the last attempt")

    assert jobs_total("retry") == retries + MAX_ATTEMPTS - 1
    (dead,) = await drain(settings.amqp_url, settings.dead_letter_queue)
    assert dead.body == body and dead.message_id == job_id
    assert dead.headers[ATTEMPT_HEADER] == MAX_ATTEMPTS
    assert "FileExistsError" in dead.headers[ERROR_HEADER]
    assert await ready_count(settings.amqp_url, settings.queue_name) == 0


async def test_probes_and_metrics(worker_settings: Settings, loaded_model: LoadedModel) -> None:
    """/readyz is 503 until the consumer consumes; /healthz always 200; /metrics for Prometheus."""
    consumer = consumer_for(worker_settings, loaded_model)
    port = free_port()
    server = serve_health(port, consumer.is_ready, consumer.stalled)
    base = f"http://127.0.0.1:{port}"
    try:
        assert (await asyncio.to_thread(http_get, f"{base}/readyz"))[0] == 503
        assert (await asyncio.to_thread(http_get, f"{base}/healthz"))[0] == 200
        async with running(consumer):
            await wait_for(consumer.is_ready, 10, "the consumer")
            assert (await asyncio.to_thread(http_get, f"{base}/readyz"))[0] == 200
            status, metrics = await asyncio.to_thread(http_get, f"{base}/metrics")
        assert status == 200
        for series in (
            'sd_worker_jobs_total{outcome="done"}',
            "sd_worker_generation_seconds_bucket",
            "sd_worker_queued_seconds_bucket",
            "sd_worker_model_load_seconds",
        ):
            assert series in metrics
        assert (await asyncio.to_thread(http_get, f"{base}/readyz"))[0] == 503
        assert (await asyncio.to_thread(http_get, f"{base}/nothing"))[0] == 404
    finally:
        server.shutdown()
        server.server_close()


async def test_liveness_fails_while_a_delivery_makes_no_progress(
    worker_settings: Settings, loaded_model: LoadedModel
) -> None:
    """A generation that cannot go on (here its thread waits for the runner, which the test
    holds) makes no step: past STALL_TIMEOUT_S /healthz says so, and the worker is still
    consuming (/readyz 200). Once it moves, /healthz is 200 again."""
    settings = worker_settings.model_copy(update={"stall_timeout_s": 1.0})
    consumer = consumer_for(settings, loaded_model)
    port = free_port()
    server = serve_health(port, consumer.is_ready, consumer.stalled)
    base = f"http://127.0.0.1:{port}"
    job_id = uuid.uuid4().hex
    try:
        async with running(consumer):
            consumer.runner._lock.acquire()
            try:
                body = {"id": job_id, "prompt": "green dog", "width": 256, "height": 256}
                await publish(settings.amqp_url, settings.queue_name, body)
                await wait_for(lambda: consumer.held() == 1, 10, "the delivery")
                assert (await asyncio.to_thread(http_get, f"{base}/healthz"))[0] == 200
                _, text = await wait_for(
                    lambda: (reply := http_get(f"{base}/healthz"))[0] == 503 and reply,
                    10,
                    "liveness to fail",
                )
                assert text.startswith("stalled: 1 held, no progress for ")
                assert text.endswith(" s (STALL_TIMEOUT_S=1)\n")
                assert (await asyncio.to_thread(http_get, f"{base}/readyz"))[0] == 200
            finally:
                consumer.runner._lock.release()
            await wait_for(lambda: consumer.held() == 0, 60, "the job to finish")
            assert (await asyncio.to_thread(http_get, f"{base}/healthz"))[0] == 200
        assert job_files(settings.images_dir, job_id) == [f"{job_id}-1.png", f"{job_id}.json"]
    finally:
        server.shutdown()
        server.server_close()


def test_the_old_uis_non_durable_declaration_is_refused_and_the_documented_fix_works(
    amqp_url: str, queue_name: str
) -> None:
    """As docs/contracts.md says (compatibility): once this system declared `tasks` durable, the
    old UI's `durable: false` declaration is refused with 406 (closing its channel); declaring it
    durable, or only checking it (passive), works."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.queue_declare(queue_name, durable=True)  # as workers and the web app declare it
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            connection.channel().queue_declare(queue_name, durable=False)
        assert refused.value.reply_code == 406
        assert "inequivalent arg 'durable'" in refused.value.reply_text
        connection.channel().queue_declare(queue_name, durable=True)
        connection.channel().queue_declare(queue_name, passive=True)
    finally:
        connection.close()
