"""Helpers for the worker tests: the real broker seen from outside, and worker processes."""

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import pika
import pytest

from sd_webui.broker import declare_queues
from sd_webui.events import EventEmitter
from sd_webui.settings import Settings
from sd_webui.worker.consumer import Consumer
from sd_webui.worker.pipeline import LoadedModel
from sd_webui.worker.runner import JobRunner

REPO = Path(__file__).resolve().parents[2]


def consumer_for(settings: Settings, model: LoadedModel, **options: EventEmitter) -> Consumer:
    """A consumer of `settings`' queue running jobs on the already loaded model."""
    return Consumer(settings, JobRunner(model, settings.images_dir), **options)


@asynccontextmanager
async def running(consumer: Consumer) -> AsyncIterator[Consumer]:
    """Run the consumer in this event loop for the duration of the block."""
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        consumer.stop()
        assert await asyncio.wait_for(task, 60) == 0


async def publish(
    amqp_url: str, queue_name: str, body: bytes | dict[str, Any], **properties: Any
) -> None:
    """Publish one raw message the way any client could (queues declared first)."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await declare_queues(channel, queue_name)
        await channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties),
            routing_key=queue_name,
        )


def publish_bare(amqp_url: str, queue_name: str, body: dict[str, Any]) -> None:
    """Publish as the original web UI did: JSON body, persistent, no `message_id` (pika sets no
    properties of its own; aio-pika would add a random `message_id`)."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.queue_declare(queue_name, durable=True)
        properties = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
        channel.basic_publish("", queue_name, json.dumps(body).encode(), properties)
    finally:
        connection.close()


async def ready_count(amqp_url: str, queue_name: str) -> int:
    """Messages waiting in the queue (not those a consumer holds unacknowledged)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        return queue.declaration_result.message_count or 0


async def drain(amqp_url: str, queue_name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Take (and acknowledge) every message waiting in a queue."""
    messages = []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=True)
        while (message := await queue.get(fail=False)) is not None:
            await message.ack()
            messages.append(message)
    return messages


async def wait_for(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    """Poll `condition` (sync or async) until it is truthy; fail with `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}")


def http_get(url: str) -> tuple[int, str]:
    """Status and text of a GET, error statuses included (probes, /status, /metrics)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def job_files(folder: Path, job_id: str) -> list[str]:
    """Every file of a job in the folder, hidden temporary ones included, sorted."""
    return sorted(path.name for path in folder.iterdir() if job_id in path.name)


class WorkerProcess:
    """`python -m sd_webui.worker` as a child process, its log in a file."""

    def __init__(self, settings: Settings, log_path: Path, **env: str) -> None:
        self.log_path = log_path
        environment = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "AMQP_URL": settings.amqp_url or "",
            "QUEUE_NAME": settings.queue_name,
            "IMAGES_DIR": str(settings.images_dir),
            "SD_MODEL": settings.sd_model,
            "MAX_JOB_UNITS": str(settings.max_job_units),
            **env,
        }
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in wait)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sd_webui.worker"],
            cwd=REPO,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait(self, seconds: float) -> int:
        """The exit status, waiting at most `seconds` (then kill and fail)."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.process.wait), seconds)
        except TimeoutError:
            self.process.kill()
            pytest.fail(f"worker still running after {seconds:.0f} s; log:\n{self.log}")
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()
