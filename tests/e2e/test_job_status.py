"""Live job status as a user sees it: the real app (RabbitMQ mode) as a child process, real
`sd-worker` processes on the tiny demo model, and headless Chromium.

One app serves the whole module (it takes a while to start); each test opens a fresh browser
context, which is a fresh session. Jobs are small (256x256, 4 steps) so a card stays running for
under a second; the ones that must be seen running are 1024x1024 (a few seconds).
"""

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from sd_webui.broker import declare_queues
from sd_webui.settings import Settings
from tests.app_process import web_app
from tests.conftest import delete_queues, run_async
from tests.e2e.conftest import added, generate, live_page
from tests.worker.worker_support import WorkerProcess, drain, ready_count

pytestmark = pytest.mark.browser

MAX_PENDING = 3
STEPS, SIDE, BIG = 4, 256, 1024
LONG_STEPS = 50  # at 1024x1024: long enough to press Cancel while it runs
HEADER_MS = 20_000  # the header follows the one poll per process (every 3 s)
WORKER_MS = 180_000  # a worker process starting, model load included, on busy cores
JOB_MS = 120_000

# Records every change of every job card (state, text and the tab's title), with Date.now().
RECORD_CARDS = """() => {
    window.__cards = [];
    const seen = {};
    const record = () => {
        for (const card of document.querySelectorAll('.job-card')) {
            const key = card.dataset.job;
            const view = card.dataset.state + '|' + card.innerText + '|' + document.title;
            if (seen[key] !== view) {
                seen[key] = view;
                window.__cards.push({job: key, state: card.dataset.state, text: card.innerText,
                                     title: document.title, at: Date.now()});
            }
        }
    };
    new MutationObserver(record).observe(document.documentElement,
        {subtree: true, childList: true, attributes: true, characterData: true});
}"""


@dataclass(frozen=True)
class Cluster:
    url: str
    settings: Settings
    folder: Path

    @property
    def images(self) -> Path:
        return self.settings.images_dir

    def worker(self, name: str, **changes: object) -> WorkerProcess:
        return WorkerProcess(self.settings.model_copy(update=changes), self.folder / f"{name}.log")


async def declare(amqp_url: str, queue: str) -> None:
    """The queue exists before any job, as in a cluster where workers ran once."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await declare_queues(await connection.channel(), queue)


@pytest.fixture(scope="module")
def cluster(
    amqp_url: str, demo_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("job-status")
    images = folder / "images"
    images.mkdir()
    queue = f"test-jobs-{uuid.uuid4().hex[:12]}"
    settings = Settings(
        amqp_url=amqp_url, queue_name=queue, images_dir=images, sd_model=str(demo_model)
    )
    environment = {
        "AMQP_URL": amqp_url,
        "QUEUE_NAME": queue,
        "IMAGES_DIR": str(images),
        "MAX_PENDING_PER_SESSION": str(MAX_PENDING),
    }
    run_async(declare(amqp_url, queue))
    try:
        with web_app(folder / "web.log", **environment) as url:
            yield Cluster(url, settings, folder)
    finally:
        run_async(delete_queues(amqp_url, queue, f"{queue}.dead"))


@pytest.fixture
def page(browser: Browser, cluster: Cluster) -> Iterator[Page]:
    with live_page(browser, cluster.url, HEADER_MS) as page:
        yield page


def generate_small(
    page: Page,
    prompt: str,
    count: int = 1,
    steps: int = STEPS,
    side: int = SIDE,
    says: str | None = None,
) -> None:
    """`generate` with this module's small jobs: `steps` steps at `side` x `side`."""
    generate(page, prompt, count, says=says, steps=steps, width=side, height=side)


def cards(page: Page, prompt: str) -> list[str]:
    """The job ids of this prompt's cards, newest first."""
    return page.locator(".job-card", has_text=prompt).evaluate_all(
        "els => els.map(e => e.dataset.job)"
    )


def card(page: Page, job_id: str):
    return page.locator(f'.job-card[data-job="{job_id}"]')


def steps_shown(seen: list[dict], steps: int, job_id: str | None = None) -> set[int]:
    """Every k of "Step k of `steps`" that the recorded cards showed (of one job, or of any)."""
    pattern = re.compile(rf"Step (\d+) of {steps}\b")
    return {
        int(match[1])
        for entry in seen
        if job_id in (None, entry["job"]) and (match := pattern.search(entry["text"]))
    }


def pixels(path: Path) -> tuple[tuple[int, int], bytes]:
    with Image.open(path) as image:
        return image.size, image.convert("RGB").tobytes()


def test_the_session_limit(page: Page, cluster: Cluster) -> None:
    url, queue = cluster.settings.amqp_url or "", cluster.settings.queue_name
    generate_small(page, "limit fox", count=2, says=added(2))
    expect(page.locator("#queue-length")).to_have_text("2", timeout=HEADER_MS)
    limit = f"you have 2 unfinished jobs and at most {MAX_PENDING} may wait or run at a time"
    generate_small(page, "limit owl", count=2, says=limit)
    assert cards(page, "limit owl") == []
    assert run_async(ready_count(url, queue)) == 2  # nothing of the refused press was published
    generate_small(page, "limit owl", says=added(1))
    expect(page.locator(".job-card", has_text="limit owl")).to_have_count(1)
    run_async(drain(url, queue))


def test_a_failing_generation_shows_its_reason(
    page: Page, cluster: Cluster, screenshot_dir: Path
) -> None:
    not_a_folder = cluster.folder / "images-is-a-file"
    not_a_folder.write_text("")
    worker = cluster.worker("failing", images_dir=not_a_folder)
    try:
        generate_small(page, "doomed cat", steps=1)
        expect(page.locator(".job-card", has_text="doomed cat")).to_have_count(1)
        (job_id,) = cards(page, "doomed cat")
        failed = card(page, job_id)
        expect(failed).to_have_attribute("data-state", "failed", timeout=WORKER_MS)
        expect(failed.locator(".job-error")).to_contain_text("FileExistsError")
        page.screenshot(path=screenshot_dir / "job-cards-failed.png")
        failed.get_by_role("button", name="Retry").click()
        expect(page.locator(".job-card", has_text="doomed cat")).to_have_count(2)
        (retry_id, _) = cards(page, "doomed cat")
        assert retry_id != job_id
    finally:
        worker.kill()
    assert worker.log.count("outcome=retry") >= 2, worker.log
    run_async(drain(cluster.settings.amqp_url or "", cluster.settings.queue_name))


def test_jobs_from_queued_to_done_cancel_reuse_and_the_header(
    page: Page, cluster: Cluster, screenshot_dir: Path
) -> None:
    page.evaluate(RECORD_CARDS)
    expect(page.locator("#worker-count")).to_have_text("0")

    # Queued, with no worker: how many jobs are ahead, and a cancel before any worker exists.
    generate_small(page, "status dog", count=2, side=BIG)
    expect(page.locator("#queue-length")).to_have_text("2", timeout=HEADER_MS)
    generate_small(page, "status doomed")
    expect(page.locator(".job-card", has_text="status doomed")).to_have_count(1)
    (cancelled_id,) = cards(page, "status doomed")
    expect(card(page, cancelled_id)).to_contain_text("2 jobs ahead of it.")
    first, second = reversed(cards(page, "status dog"))
    expect(card(page, first)).to_contain_text("Next in the queue.")
    expect(card(page, second)).to_contain_text("1 job ahead of it.")
    page.screenshot(path=screenshot_dir / "job-cards-queued.png")
    card(page, cancelled_id).get_by_role("button", name="Cancel").click()
    expect(card(page, cancelled_id)).to_contain_text("Cancelling")

    # Running and its steps are checked in the recorded history below: on a fast CPU these small
    # jobs can be over before any live check (or the header's 3 s poll) looks.
    worker = cluster.worker("worker")
    try:
        for job_id in (first, second):
            expect(card(page, job_id)).to_have_attribute("data-state", "done", timeout=WORKER_MS)
            image = page.locator(f'img[data-job="{job_id}"]')
            expect(image).to_be_visible()
            expect(image).to_have_css("outline-style", "solid")  # highlighted: this tab's job
        expect(card(page, cancelled_id)).to_have_attribute(
            "data-state", "cancelled", timeout=JOB_MS
        )

        # "Reuse settings" on the first image, then Generate: the very same pixels.
        page.locator(f'img[data-job="{first}"]').click()
        page.get_by_role("button", name="Reuse settings").click()
        # Waits for the reused values to arrive: the last press before was 256 wide, unseeded.
        expect(page.locator("#width")).to_have_value(str(BIG))
        expect(page.locator("#seed")).to_have_value(re.compile(r"^\d+$"))
        expect(page.locator("#steps")).to_have_value(str(STEPS))
        page.get_by_role("button", name="Generate").click()
        expect(page.locator(".job-card", has_text="status dog")).to_have_count(3)
        again = cards(page, "status dog")[0]
        expect(card(page, again)).to_have_attribute("data-state", "done", timeout=JOB_MS)

        # A running job, cancelled from its card, stops at its next step and writes nothing.
        generate_small(page, "status long", steps=LONG_STEPS, side=BIG)
        expect(page.locator(".job-card", has_text="status long")).to_have_count(1)
        (stopped_id,) = cards(page, "status long")
        stopped = card(page, stopped_id)
        expect(stopped).to_contain_text(f"of {LONG_STEPS}", timeout=JOB_MS)
        expect(stopped.get_by_role("progressbar")).to_be_visible()
        expect(page.locator("#worker-count")).to_have_text("1", timeout=HEADER_MS)
        page.screenshot(path=screenshot_dir / "job-cards-running.png")
        stopped.get_by_role("button", name="Cancel").click()
        expect(stopped).to_have_attribute("data-state", "cancelled", timeout=JOB_MS)
    finally:
        worker.kill()
    expect(page.locator("#worker-count")).to_have_text("0", timeout=HEADER_MS)
    expect(page.locator("#queue-length")).to_have_text("0")

    assert pixels(cluster.images / f"{first}-1.png") == pixels(cluster.images / f"{again}-1.png")
    assert sorted(path.name for path in cluster.images.glob(f"{cancelled_id}*")) == []
    assert f"job {cancelled_id} count=1" in worker.log and "outcome=cancelled" in worker.log
    assert sorted(path.name for path in cluster.images.glob(f"*{stopped_id}*")) == []
    assert worker.log.count("outcome=cancelled") == 2, worker.log

    # The cards moved through every state, the progress bar moved, and the title followed.
    seen = page.evaluate("window.__cards")
    states = [entry["state"] for entry in seen if entry["job"] == first]
    assert states.index("queued") < states.index("running") < states.index("done"), states
    assert len(steps_shown(seen, STEPS)) >= 2, seen
    stopped_at = steps_shown(seen, LONG_STEPS, stopped_id)
    assert stopped_at and max(stopped_at) < LONG_STEPS, stopped_at  # it really was running
    assert any(re.fullmatch(r"\[\d+%\] Stable Diffusion", entry["title"]) for entry in seen)
    assert page.title() == "Stable Diffusion"
    for job_id in (first, second, again):
        done_at = next(e["at"] for e in seen if e["job"] == job_id and e["state"] == "done")
        written = (cluster.images / f"{job_id}-1.png").stat().st_ctime * 1000
        print(
            f"\nlast file of {job_id[:8]} written -> card done in the browser: "
            f"{done_at - written:.0f} ms"
        )

    # A reload in the same tab keeps every card, restored from the process's registry.
    page.reload()
    for job_id, state in (
        (first, "done"),
        (second, "done"),
        (cancelled_id, "cancelled"),
        (stopped_id, "cancelled"),
    ):
        expect(card(page, job_id)).to_have_attribute("data-state", state)
