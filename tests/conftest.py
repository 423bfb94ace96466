"""Fixtures shared by every test: the real RabbitMQ broker, per-test queues, no model hub."""

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("REFLEX_TELEMETRY_ENABLED", "false")

BROKER_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
IN_CI = os.environ.get("CI") == "true"


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def unavailable(reason: str) -> None:
    """Under CI=true a missing service fails the run; elsewhere the test is skipped."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The real broker on 127.0.0.1:5672, started with `rabbitmq-server -detached` if down."""
    if not _port_open("127.0.0.1", 5672) and shutil.which("rabbitmq-server"):
        subprocess.run(["rabbitmq-server", "-detached"], check=False)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _port_open("127.0.0.1", 5672):
            time.sleep(1)
    if not _port_open("127.0.0.1", 5672):
        unavailable("RabbitMQ is not reachable on 127.0.0.1:5672")
    return BROKER_URL


@pytest.fixture
async def queue_name(amqp_url: str) -> AsyncIterator[str]:
    """A fresh queue name per test (and its `.dead` twin), deleted afterwards."""
    name = f"test-tasks-{uuid.uuid4().hex[:12]}"
    yield name
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for queue in (name, f"{name}.dead"):
            await channel.queue_delete(queue)


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Stable Diffusion folder, loaded through the same path as a real model."""
    from sd_webui.demo_model import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("demo-model"))


@pytest.fixture
def images_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "images"
    folder.mkdir()
    yield folder
