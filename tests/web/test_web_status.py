"""The web app against a broker that really stops and starts (a node of the tests' own): the page
stays ready, and `/status` and `/metrics` tell the broker's state within seconds."""

import asyncio
import json
import time
import uuid
from typing import Any

import pytest

from tests.rabbitmq_node import RabbitNode
from tests.worker.worker_support import http_get, wait_for

pytestmark = pytest.mark.broker

# The poll runs every 3 s with a 3 s timeout: a change shows within two polls.
WITHIN_S = 10


@pytest.fixture(scope="module")
def amqp_url(rabbit_node: RabbitNode) -> str:
    """This module's app publishes to the private node, which the test stops."""
    return rabbit_node.url


@pytest.fixture(scope="module")
def web_queue() -> str:
    return f"test-web-{uuid.uuid4().hex[:12]}"


async def status(backend_url: str) -> dict[str, Any]:
    code, body = await asyncio.to_thread(http_get, f"{backend_url}/status")
    assert code == 200
    return json.loads(body)


async def broker_up_metric(backend_url: str) -> str:
    _, metrics = await asyncio.to_thread(http_get, f"{backend_url}/metrics")
    return next(line for line in metrics.splitlines() if line.startswith("sd_web_broker_up "))


async def test_status_follows_the_broker_and_readiness_does_not(
    rabbit_node: RabbitNode, backend_url: str
) -> None:
    async def reachable(expected: bool) -> bool:
        assert (await asyncio.to_thread(http_get, f"{backend_url}/readyz"))[0] == 200
        return (await status(backend_url))["broker_reachable"] is expected

    await wait_for(lambda: reachable(True), WITHIN_S, "the broker reachable")
    assert await broker_up_metric(backend_url) == "sd_web_broker_up 1.0"

    rabbit_node.stop_app()
    try:
        stopped = time.monotonic()
        await wait_for(lambda: reachable(False), WITHIN_S, "/status to see the broker gone")
        print(f"broker gone -> /status false in {time.monotonic() - stopped:.1f} s")
        seen = await status(backend_url)
        assert (seen["waiting"], seen["workers"]) == (None, None)
        assert seen["gallery_scanned"] is True and seen["images_readable"] is True
        assert await broker_up_metric(backend_url) == "sd_web_broker_up 0.0"
    finally:
        rabbit_node.start_app()
    started = time.monotonic()
    await wait_for(lambda: reachable(True), WITHIN_S, "/status to see the broker back")
    print(f"broker back -> /status true in {time.monotonic() - started:.1f} s")
    assert await broker_up_metric(backend_url) == "sd_web_broker_up 1.0"
