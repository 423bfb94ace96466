"""The product as a user runs it: `reflex run --env prod --single-port` as a child process,
`sd-worker` processes on the tiny demo model, and headless Chromium."""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import chromium

TOAST_MS = 15_000
ADDED = "The task was added to the job queue"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Chromium for one test module."""
    with chromium() as browser:
        yield browser


@contextmanager
def live_page(browser: Browser, url: str, ready_ms: float) -> Iterator[Page]:
    """A fresh browser context (a fresh session) on the page at `url`, once it is live: the
    header's figures come from the page's on_load, so the session is live once they show."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TOAST_MS)
    page.goto(url)
    expect(page.locator("#worker-count")).not_to_have_text("?", timeout=ready_ms)
    try:
        yield page
    finally:
        context.close()


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
