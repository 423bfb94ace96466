"""Fixtures shared by every test: the real RabbitMQ broker, per-test queues, no model hub."""

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import pytest
from PIL import Image

from sd_webui.jobs import Job
from sd_webui.metadata import FastSDSettings
from sd_webui.settings import Settings
from sd_webui.worker.outputs import write_job_files

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("REFLEX_TELEMETRY_ENABLED", "false")

pytest_plugins = [
    "tests.rabbitmq_node",  # the rabbit_node fixture: a broker tests may stop
    "tests.s3_server",  # s3_server, bucket_name: a real S3 HTTP server (moto)
]
REDIS_URL = "redis://127.0.0.1:6379/0"
BROKER_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
IN_CI = os.environ.get("CI") == "true"
T = TypeVar("T")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unavailable(reason: str) -> None:
    """Under CI=true a missing service fails the run; elsewhere the test is skipped."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def wait_listening(process: subprocess.Popen, port: int, name: str, seconds: float) -> None:
    """Until the child `process` accepts connections on 127.0.0.1:`port`; fail if it exits or
    takes longer than `seconds`."""
    deadline = time.monotonic() + seconds
    while not port_open("127.0.0.1", port):
        assert process.poll() is None, f"{name} exited"
        assert time.monotonic() < deadline, f"{name} did not start"
        time.sleep(0.05)


def serving(port: int, command: list[str], name: str, seconds: float) -> None:
    """Start the shared service on `port` with `command` if nothing listens there (it is
    started before the tests, but may have stopped); fail, or skip outside CI, if it cannot."""
    if not port_open("127.0.0.1", port) and shutil.which(command[0]):
        subprocess.run(command, check=False)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not port_open("127.0.0.1", port):
            time.sleep(0.5)
    if not port_open("127.0.0.1", port):
        unavailable(f"{name} is not reachable on 127.0.0.1:{port}")


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The real broker on 127.0.0.1:5672, started with `rabbitmq-server -detached` if down."""
    serving(5672, ["rabbitmq-server", "-detached"], "RabbitMQ", 60)
    return BROKER_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The real Redis on 127.0.0.1:6379, started with `redis-server --daemonize yes` if down."""
    serving(6379, ["redis-server", "--daemonize", "yes"], "Redis", 30)
    return REDIS_URL


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright's sync API (never a downloaded browser).

    The sync API holds this thread's event loop while it runs, so a module using it must not
    hold it across pytest-asyncio tests."""
    if not Path(CHROMIUM).exists():
        unavailable(f"Chromium is not installed at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def write_finished_job(folder: Path, job: Job) -> None:
    """A job's files as a worker writes them (the worker's own writer): tiny 8x8 images."""
    record = FastSDSettings.for_job(job, model_id="m", seeds=list(range(job.count)))
    write_job_files(folder, job.id, record, [Image.new("RGB", (8, 8))] * job.count)


def run_async(coroutine: Coroutine[object, object, T]) -> T:
    """Run `coroutine` to the end on a thread of its own, whatever loop this thread holds
    (Playwright's sync API keeps one running on the test thread)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def delete_queues(amqp_url: str, *names: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)


@pytest.fixture
def queue_name(amqp_url: str) -> Iterator[str]:
    """A fresh queue name per test (and its `.dead` twin), deleted afterwards."""
    name = f"test-tasks-{uuid.uuid4().hex[:12]}"
    yield name
    run_async(delete_queues(amqp_url, name, f"{name}.dead"))


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests save their screenshots: `SCREENSHOT_DIR` (`make screenshots`
    sets docs/), else a temporary folder, so that a test run changes no tracked file."""
    if folder := os.environ.get("SCREENSHOT_DIR"):
        return Path(folder).resolve()
    return tmp_path_factory.mktemp("screenshots")


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


@pytest.fixture
def worker_settings(amqp_url: str, queue_name: str, images_dir: Path, demo_model: Path) -> Settings:
    """A worker on the demo model, its own queue and images folder."""
    return Settings(
        amqp_url=amqp_url, queue_name=queue_name, images_dir=images_dir, sd_model=str(demo_model)
    )
