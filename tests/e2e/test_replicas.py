"""Two web replicas sharing Redis behind a TCP relay, a real worker and headless Chromium.

Both replicas run as a user runs them (`reflex run --env prod`, REDIS_URL set). The page's
websocket and images go through the relay (REFLEX_API_URL points the page at it), which hands
each new connection to the first replica that accepts it. Replica A serves the page; B is
started while a job runs, so all it knows of that job is what Redis holds.
"""

import asyncio
import contextlib
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from sd_webui.settings import Settings
from tests.app_process import WebApp, web_app_process
from tests.broker_relay import BrokerRelay
from tests.conftest import delete_queues, run_async
from tests.e2e.conftest import TOAST_MS, generate, live_page
from tests.redis_server import RedisServer
from tests.worker.worker_support import WorkerProcess

pytestmark = pytest.mark.browser

# Long enough (a few seconds per step on 2 shared cores) to start replica B while it runs.
SIDE, STEPS = 1024, 24
JOB_MS = 240_000
STATUS_MS = 20_000  # the feed pings Redis every 3 s (POLL_INTERVAL_S)


class ThreadedRelay:
    """A BrokerRelay on a loop of its own thread, for sync (Playwright) tests."""

    def __init__(self) -> None:
        self.relay = BrokerRelay(0)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._call(self.relay.start())

    def _call(self, coroutine) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.relay.port}"

    def send_to(self, *apps: WebApp) -> None:
        """New connections go to the first of `apps` that accepts; open ones are cut."""

        async def switch() -> None:
            self.relay.upstream_ports = [int(app.url.rsplit(":", 1)[1]) for app in apps]
            self.relay.cut()

        self._call(switch())

    def close(self) -> None:
        self._call(self.relay.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Replicas:
    folder: Path
    env: dict[str, str]
    relay: ThreadedRelay
    redis: RedisServer
    a: WebApp
    stack: contextlib.ExitStack
    b: WebApp | None = None

    def start_b(self) -> WebApp:
        if self.b is None:
            log = self.folder / "web-b.log"
            self.b = self.stack.enter_context(web_app_process(log, backend_only=True, **self.env))
        return self.b


@pytest.fixture(scope="module")
def replicas(
    amqp_url: str, demo_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    folder = tmp_path_factory.mktemp("replicas")
    redis = RedisServer(folder)  # of this module's own: one test stops it
    redis.start()
    images = folder / "images"
    images.mkdir()
    queue = f"test-replicas-{uuid.uuid4().hex[:12]}"
    exchange = f"test-replicas-events-{uuid.uuid4().hex[:12]}"
    relay = ThreadedRelay()
    env = {
        "AMQP_URL": amqp_url,
        "QUEUE_NAME": queue,
        "EVENTS_EXCHANGE": exchange,
        "IMAGES_DIR": str(images),
        "REDIS_URL": redis.url,
        "REFLEX_API_URL": relay.url,  # the page's websocket and images: through the relay
    }
    settings = Settings(
        amqp_url=amqp_url,
        queue_name=queue,
        events_exchange=exchange,
        images_dir=images,
        sd_model=str(demo_model),
    )
    worker = WorkerProcess(settings, folder / "worker.log", EVENTS_EXCHANGE=exchange)
    try:
        with contextlib.ExitStack() as stack:
            a = stack.enter_context(web_app_process(folder / "web-a.log", **env))
            relay.send_to(a)
            yield Replicas(folder, env, relay, redis, a, stack)
    finally:
        worker.kill()
        redis.stop()
        relay.close()
        run_async(delete_queues(amqp_url, queue, f"{queue}.dead"))


@pytest.fixture
def page(browser: Browser, replicas: Replicas) -> Iterator[Page]:
    with live_page(browser, replicas.a.url, 60_000) as page:
        yield page


def running_job(page: Page, prompt: str) -> str:
    """Generate one long job and wait until its card shows it running; its id."""
    generate(page, prompt, steps=STEPS, width=SIDE, height=SIDE)
    card = page.locator(".job-card", has_text=prompt)
    expect(card).to_have_attribute("data-state", "running", timeout=JOB_MS)
    return card.get_attribute("data-job") or ""


STEP_OF = """id => Number((document.querySelector(`.job-card[data-job="${id}"]`)?.innerText ?? '')
    .match(/Step (\\d+) of/)?.[1] ?? 0)"""


def step(page: Page, job_id: str) -> int:
    """The step the job's card shows (0 before the first)."""
    return page.evaluate(STEP_OF, job_id)


def worker_of(page: Page, job_id: str) -> str:
    """The worker the card names ("Step 3 of 24 · host:pid"): only the job's `started` event
    says it, which a replica started later never received itself."""
    text = page.locator(f'.job-card[data-job="{job_id}"]').inner_text()
    return text.split(" · ")[-1].strip()


def expect_moving_on(page: Page, job_id: str, past: int, worker: str) -> None:
    """The card shows the job running on `worker`, from step `past` on and moving."""
    card = page.locator(f'.job-card[data-job="{job_id}"]')
    expect(card).to_have_attribute("data-state", "running", timeout=TOAST_MS)
    expect(card).to_contain_text(worker)
    assert step(page, job_id) >= past  # restored where it was, not from the start
    page.wait_for_function(f"id => ({STEP_OF})(id) > {past}", arg=job_id, timeout=JOB_MS)


def expect_done_with_images(page: Page, job_id: str) -> None:
    """The card ends done, and the job's image is in the gallery."""
    card = page.locator(f'.job-card[data-job="{job_id}"]')
    expect(card).to_have_attribute("data-state", "done", timeout=JOB_MS)
    expect(page.locator(f'img[data-job="{job_id}"]').first).to_be_visible(timeout=TOAST_MS)


def test_redis_down_the_page_says_so_and_recovers_by_itself(page: Page, replicas: Replicas) -> None:
    banner = page.locator("#redis-status")
    expect(banner).to_be_hidden()
    replicas.redis.stop()
    expect(banner).to_be_visible(timeout=STATUS_MS)
    assert status(replicas.a.url)["redis_reachable"] is False
    assert status(replicas.a.url)["gallery_scanned"] is True  # the rest reports on
    replicas.redis.start()  # empty: Redis lost every tab's state
    expect(banner).to_be_hidden(timeout=STATUS_MS)
    assert status(replicas.a.url)["redis_reachable"] is True
    generate(page, "Sent once Redis is back", steps=2, width=256, height=256)


def status(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/status", timeout=10) as response:
        return json.load(response)


def test_a_tab_moves_to_a_replica_started_after_its_job_began(
    page: Page, replicas: Replicas
) -> None:
    job_id = running_job(page, "Replica B was not there when this began")
    b = replicas.start_b()
    before, worker = step(page, job_id), worker_of(page, job_id)
    assert ":" in worker
    replicas.relay.send_to(b)  # the tab's websocket is cut; it can only reconnect to B
    # Restored on B from Redis (Reflex's state of the tab, and the shared job registry), then
    # moved on by B's own events subscriber.
    expect_moving_on(page, job_id, before, worker)
    expect_done_with_images(page, job_id)


def test_killing_the_replica_of_a_tab_loses_nothing(page: Page, replicas: Replicas) -> None:
    b = replicas.start_b()
    replicas.relay.send_to(replicas.a, b)  # A first, B once A refuses
    job_id = running_job(page, "The replica serving this tab is killed")
    page.wait_for_function(f"id => ({STEP_OF})(id) > 0", arg=job_id, timeout=JOB_MS)
    # While the worker is busy, a job queued through A's API waits; B never saw it announced.
    api_job = submit(replicas.a.url, "Queued through replica A's API")
    assert job_state(b.url, api_job) == "queued"
    before, worker = step(page, job_id), worker_of(page, job_id)
    # B hears the same events on its own subscription; under load a little later than A.
    wait_step_known(b.url, job_id, before)
    replicas.a.kill()
    replicas.relay.send_to(replicas.a, b)  # A's sockets die with it; cut what the relay holds
    expect_moving_on(page, job_id, before, worker)
    expect_done_with_images(page, job_id)
    deadline = time.monotonic() + JOB_MS / 1000
    while job_state(b.url, api_job) != "done":
        assert time.monotonic() < deadline, "the API's job did not finish"
        time.sleep(0.5)


def submit(url: str, prompt: str) -> str:
    """POST /api/v1/jobs: one small job; its id."""
    body = json.dumps({"prompt": prompt, "steps": 2, "width": 256, "height": 256}).encode()
    request = urllib.request.Request(
        f"{url}/api/v1/jobs", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["ids"][0]


def job_of(url: str, job_id: str) -> dict:
    with urllib.request.urlopen(f"{url}/api/v1/jobs/{job_id}", timeout=10) as response:
        return json.load(response)


def job_state(url: str, job_id: str) -> str:
    return job_of(url, job_id)["state"]


def wait_step_known(url: str, job_id: str, step_shown: int) -> None:
    """Until the replica at `url` knows the job at the step a tab shows (or further)."""
    deadline = time.monotonic() + 30
    while (job_of(url, job_id).get("step") or 0) < step_shown:
        assert time.monotonic() < deadline, f"{url} never heard step {step_shown} of {job_id}"
        time.sleep(0.1)
