"""The whole loop, as a user sees it: a prompt typed in Chromium becomes images made by the real
diffusers pipeline (the tiny demo model) and pushed live into the gallery.

With RabbitMQ and separate `sd-worker` processes, and with the embedded default (no AMQP_URL).
"""

import glob
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from playwright.sync_api import Browser, Page, expect

from sd_webui.settings import Settings
from tests.app_process import ROOT, web_app, web_app_process
from tests.e2e.conftest import TOAST_MS, generate
from tests.worker.worker_support import WorkerProcess

pytestmark = pytest.mark.browser

# Generous: the first image includes the browser fetching it; a 512x512 job on the demo model
# takes about a second on two busy cores.
IMAGES_TIMEOUT_MS = 120_000
# Where Debian puts tcmalloc; the Makefile preloads it when it is there.
TCMALLOC = "/usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4"


def preloads_tcmalloc(pid: int) -> bool:
    """Whether the app's Python processes (under `make`) have tcmalloc mapped."""
    processes = [
        process
        for process in psutil.Process(pid).children(recursive=True)
        if "python" in Path(process.cmdline()[0]).name  # reflex and its server, not bun or sh
    ]
    assert processes
    return all(
        any("libtcmalloc" in region.path for region in process.memory_maps())
        for process in processes
    )


def shown_jobs(page: Page, prompt: str) -> list[str]:
    """The job id of every image with this prompt now in the gallery."""
    names = page.locator(f'img[alt="{prompt}"]').evaluate_all("els => els.map(e => e.dataset.name)")
    return [name.rpartition("-")[0] for name in names]


def expect_hover_card(page: Page, prompt: str, model: str, size: str) -> None:
    page.locator(f'img[alt="{prompt}"]').first.hover()
    card = page.locator("[data-radix-popper-content-wrapper]")
    expect(card).to_contain_text(prompt)
    expect(card).to_contain_text(f"Model: {model}")
    expect(card).to_contain_text(f"Size: {size}px")
    expect(card).to_contain_text(re.compile(r"Generated: .*(seconds?|minutes?) ago"))
    page.mouse.move(0, 0)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def test_rabbitmq_and_a_separate_worker(
    page: Page,
    worker_settings: Settings,
    demo_model: Path,
    images_dir: Path,
    tmp_path: Path,
) -> None:
    worker = WorkerProcess(worker_settings, tmp_path / "worker.log")
    try:
        with web_app(
            tmp_path / "web.log",
            AMQP_URL=worker_settings.amqp_url or "",
            QUEUE_NAME=worker_settings.queue_name,
            IMAGES_DIR=str(images_dir),
        ) as url:
            page.goto(url)
            generate(page, "green dog", 2, in_parallel=False)
            expect(page.locator('img[alt="green dog"]')).to_have_count(2, timeout=IMAGES_TIMEOUT_MS)
            assert len(set(shown_jobs(page, "green dog"))) == 1
            expect_hover_card(page, "green dog", str(demo_model), "512x512")

            generate(page, "blue cat", 3, in_parallel=True)
            expect(page.locator('img[alt="blue cat"]')).to_have_count(3, timeout=IMAGES_TIMEOUT_MS)
            assert len(set(shown_jobs(page, "blue cat"))) == 3

            answer = httpx.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "api owl"}, timeout=120)
            assert len(answer.json()["images"]) == 1  # an API job lands in the live gallery
            expect(page.locator('img[alt="api owl"]')).to_have_count(1, timeout=IMAGES_TIMEOUT_MS)
    finally:
        worker.kill()
    assert worker.log.count("outcome=done") == 5, worker.log


def test_make_run_the_embedded_default_without_amqp_url(
    page: Page, demo_model: Path, images_dir: Path, tmp_path: Path
) -> None:
    """`make run`, as the README says, with SD_MODEL set to a local model folder."""
    environment = {"IMAGES_DIR": str(images_dir), "SD_MODEL": str(demo_model)}
    with web_app_process(tmp_path / "web.log", make_target="run", **environment) as app:
        url = app.url
        assert preloads_tcmalloc(app.process.pid) == bool(glob.glob(TCMALLOC))
        page.goto(url)
        generate(page, "red fox", 2, in_parallel=False)
        expect(page.locator('img[alt="red fox"]')).to_have_count(2, timeout=IMAGES_TIMEOUT_MS)
        expect(page.locator("#model-status")).to_have_count(0)
        expect_hover_card(page, "red fox", str(demo_model), "512x512")
        answer = httpx.post(f"{url}/api/v1/jobs", json={"prompt": "api heron"})
        (api_job,) = answer.json()["ids"]  # an API job lands in the live gallery
        expect(page.locator('img[alt="api heron"]')).to_have_count(1, timeout=IMAGES_TIMEOUT_MS)
        log = (tmp_path / "web.log").read_text()
    assert log.count("outcome=done") == 2, log
    (stem,) = {path.stem for path in images_dir.glob("*.json")} - {api_job}
    assert sorted(path.name for path in images_dir.iterdir()) == sorted(
        [f"{stem}-1.png", f"{stem}-2.png", f"{stem}.json", f"{api_job}-1.png", f"{api_job}.json"]
    )


def test_make_demo_runs_on_the_demo_model_it_builds(
    page: Page, images_dir: Path, tmp_path: Path
) -> None:
    """`make demo`, the README's way of trying the product offline: it builds the tiny model
    in .cache/demo-model and the page generates with it (the hover card names it)."""
    # `make demo` means the demo model, whatever SD_MODEL the shell has.
    environment = {"IMAGES_DIR": str(images_dir), "SD_MODEL": "stabilityai/sd-turbo"}
    with web_app(tmp_path / "web.log", make_target="demo", **environment) as url:
        page.goto(url)
        generate(page, "grey heron", 1)
        expect(page.locator('img[alt="grey heron"]')).to_have_count(1, timeout=IMAGES_TIMEOUT_MS)
        expect(page.locator("#model-status")).to_have_count(0)
        expect_hover_card(page, "grey heron", ".cache/demo-model", "512x512")
        icon = httpx.get(f"{url}/favicon.ico")  # assets/ is part of the production build
        assert (icon.status_code, icon.content[:4]) == (200, b"\0\0\1\0")
    assert (ROOT / ".cache/demo-model/model_index.json").is_file()


def test_embedded_default_says_what_to_set_when_the_model_cannot_load(
    page: Page, images_dir: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-model"
    with web_app(tmp_path / "web.log", IMAGES_DIR=str(images_dir), SD_MODEL=str(missing)) as url:
        page.goto(url)
        status = page.locator("#model-status")
        expect(status).to_contain_text("The model could not be loaded", timeout=TOAST_MS)
        expect(status).to_contain_text("set SD_MODEL")
        page.get_by_placeholder("Yellow submarine").fill("green dog")
        page.get_by_role("button", name="Generate").click()
        expect(page.get_by_text("The queue is unavailable")).to_be_visible()
