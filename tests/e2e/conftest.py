"""The product as a user runs it: `reflex run --env prod --single-port` as a child process,
`sd-worker` processes on the tiny demo model, and headless Chromium."""

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import chromium, free_port, unavailable

ROOT = Path(__file__).resolve().parents[2]
APP_START_TIMEOUT_S = 300
TOAST_MS = 15_000
ADDED = "The task was added to the job queue"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def web_app(log_path: Path, **env: str) -> Iterator[str]:
    """The web app in production mode on a free port; yields its URL, stops it afterwards."""
    if not shutil.which("bun"):
        unavailable("bun is not installed (scripts/setup.sh installs it)")
    port = free_port()
    environment = {
        **os.environ,
        "REFLEX_USE_SYSTEM_BUN": "1",
        "REFLEX_TELEMETRY_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        **env,
    }
    if "AMQP_URL" not in env:
        environment.pop("AMQP_URL", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/reflex"),
                "run",
                "--env",
                "prod",
                "--single-port",
                "--frontend-port",
                str(port),
            ],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + APP_START_TIMEOUT_S
            while not (_answers(f"{url}/healthz") and _answers(url)):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the web app did not start; log:\n{log_path.read_text()[-4000:]}")
                time.sleep(1)
            yield url
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Chromium for one test module."""
    with chromium() as browser:
        yield browser


def added(count: int) -> str:
    """The success toast of a press of Generate for `count` images."""
    return f"{ADDED} ({'1 image' if count == 1 else f'{count} images'})."


def generate(
    page: Page,
    prompt: str,
    count: int = 1,
    *,
    in_parallel: bool = True,
    says: str | None = None,
    **advanced: int,
) -> None:
    """Type, choose the count, set "in parallel" and any Advanced field (`steps=4`, `width=256`),
    press Generate and see the newest toast say `says` (by default: this press's success).

    The slider shows the server's value: one key at a time, each waiting for its round trip.
    """
    page.get_by_placeholder("Yellow submarine").fill(prompt)
    page.get_by_role("slider").focus()
    page.keyboard.press("Home")
    expect(page.get_by_text("Number of images: 1")).to_be_visible()
    for value in range(2, count + 1):
        page.keyboard.press("ArrowRight")
        expect(page.get_by_text(f"Number of images: {value}")).to_be_visible()
    checkbox = page.get_by_role("checkbox")
    if checkbox.is_checked() != in_parallel:
        checkbox.click()
    if advanced and not page.locator("#steps").is_visible():
        page.get_by_role("button", name="Advanced").click()
    for field, value in advanced.items():
        page.locator(f"#{field}").fill(str(value))
    page.get_by_role("button", name="Generate").click()
    # The newest toast: an earlier press's may still be on screen.
    toast = page.locator("[data-sonner-toast]").first
    expect(toast).to_contain_text(says or added(count), timeout=TOAST_MS)
