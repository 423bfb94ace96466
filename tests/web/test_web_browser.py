"""The page in headless Chromium against the running app: Generate, live gallery, views, 404s."""

import http.client
import io
import json
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, WebSocketRoute, expect

from tests.web.conftest import HARNESS_GALLERY_SIZE, run_async, write_image
from tests.worker.worker_support import drain

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
TIMEOUT_MS = 15_000
PROMPTS = [
    "Yellow submarine under a coral reef",
    "A lighthouse on a cliff at dusk, oil painting",
    "Tiny robot watering a bonsai tree",
    "Northern lights over a frozen lake",
    "A cozy cabin in a snowy pine forest",
    "Hot air balloons over Cappadocia at sunrise",
    "A koi pond in autumn, watercolor",
    "Neon city street in the rain",
]
# The seeded images' pixel sizes: a job asks for 256..1024 of either side, other writers drop
# what they like; the newest (the one the hover card test reads) is the default 512x512.
SIZES = [(512, 512), (1024, 1024), (64, 64), (256, 256), (768, 512), (512, 768), (1024, 256)]
SIZES.append((512, 512))


def taken_bodies(url: str, queue: str) -> list[dict]:
    """The bodies of every message now in `queue` (acknowledged), with their message ids."""
    return [
        {**json.loads(message.body), "_message_id": message.message_id}
        for message in run_async(drain(url, queue))
    ]


@pytest.fixture(scope="module")
def seeded(web_images: Path) -> list[Path]:
    """A few finished jobs in the folder (one with two images) of mixed sizes, oldest first."""
    paths = []
    for index, (prompt, size) in enumerate(zip(PROMPTS, SIZES, strict=True)):
        stem = f"{index:02d}seed{index:026x}"
        count = 2 if index == 3 else 1
        for n in range(1, count + 1):
            hue = index / len(PROMPTS)
            paths.append(write_image(web_images, stem, n, hue, prompt, count, size))
            time.sleep(0.02)
    return paths


@pytest.fixture
def page(browser: Browser, harness, seeded: list[Path]) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(harness.frontend_url)
    expect(page.locator("img[data-name]").first).to_be_visible()
    yield page
    context.close()


# Records (Date.now()) when an image of the given name enters the page: no polling delay.
SEEN_AT = """name => new MutationObserver((changes, observer) => {
    if (document.querySelector(`img[data-name="${name}"]`)) {
        window.__seenAt = Date.now();
        observer.disconnect();
    }
}).observe(document.body, {subtree: true, childList: true, attributes: true})"""


def shown(page: Page) -> list[str]:
    return page.locator("img[data-name]").evaluate_all("els => els.map(e => e.dataset.name)")


def test_generate_publishes_clears_and_refocuses(page: Page, amqp_url: str, web_queue: str) -> None:
    taken_bodies(amqp_url, web_queue)
    prompt = page.get_by_placeholder("Yellow submarine")
    prompt.fill("green dog")
    page.get_by_role("slider").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_text("Number of images: 2")).to_be_visible()
    prompt.press("Enter")
    expect(page.get_by_text("The task was added to the job queue (2 images).")).to_be_visible()
    expect(prompt).to_have_value("")
    expect(page.get_by_text("Number of images: 1")).to_be_visible()
    expect(prompt).to_be_focused()
    bodies = taken_bodies(amqp_url, web_queue)
    assert [(body["prompt"], body["count"]) for body in bodies] == [("green dog", 1)] * 2
    assert all(body["_message_id"] == body["id"] for body in bodies)


def test_one_job_of_n_when_not_in_parallel(page: Page, amqp_url: str, web_queue: str) -> None:
    taken_bodies(amqp_url, web_queue)
    page.get_by_placeholder("Yellow submarine").fill("blue cat")
    page.get_by_role("slider").focus()
    page.keyboard.press("End")
    page.get_by_role("checkbox").click()
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_text("The task was added to the job queue (4 images).")).to_be_visible()
    (body,) = taken_bodies(amqp_url, web_queue)
    assert (body["prompt"], body["count"]) == ("blue cat", 4)


def test_stop_list_warns_and_publishes_nothing(page: Page, amqp_url: str, web_queue: str) -> None:
    taken_bodies(amqp_url, web_queue)
    prompt = page.get_by_placeholder("Yellow submarine")
    prompt.fill("sex on the beach")
    page.get_by_role("button", name="Generate").click()
    expect(
        page.get_by_text("Please don't use this tool for creating NSFW content.")
    ).to_be_visible()
    expect(prompt).to_have_value("sex on the beach")
    prompt.fill("Essex countryside")
    prompt.press("Enter")
    expect(page.get_by_text("The task was added to the job queue (1 image).")).to_be_visible()
    assert [body["prompt"] for body in taken_bodies(amqp_url, web_queue)] == ["Essex countryside"]


SOCKET_IO_EVENT = re.compile(r"^(42(?:/[^,\[]*,)?\d*)(\[.*)$", re.DOTALL)


def crafting(page: Page, handler: str, value: object) -> None:
    """Rewrite the payload of `handler` events on their way to the server (a crafted client)."""

    def rewrite(message: str | bytes) -> str | bytes:
        match = SOCKET_IO_EVENT.match(message) if isinstance(message, str) else None
        if match is None or handler not in message:
            return message
        frame = json.loads(match[2])
        for item in frame[1:]:
            event = item.get("event", item) if isinstance(item, dict) else {}
            if event.get("name", "").endswith(handler):
                event["payload"] = {key: value for key in event["payload"]}
        return match[1] + json.dumps(frame)

    def route(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        ws.on_message(lambda message: server.send(rewrite(message)))

    page.route_web_socket(re.compile(r".*/_event.*"), route)
    page.reload()
    expect(page.locator("img[data-name]").first).to_be_visible()


@pytest.mark.parametrize(
    ("handler", "value", "says"),
    [("set_count", [9], "count"), ("set_prompt", "x" * 1001, "at most 1000 characters")],
)
def test_crafted_events_are_refused_on_the_server(
    page: Page, amqp_url: str, web_queue: str, handler: str, value: object, says: str
) -> None:
    taken_bodies(amqp_url, web_queue)
    crafting(page, handler, value)
    page.get_by_placeholder("Yellow submarine").fill("green dog")
    page.get_by_role("slider").focus()
    page.keyboard.press("ArrowRight")
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_text(re.compile("Not sent, the job is invalid: .*" + says))).to_be_visible()
    assert taken_bodies(amqp_url, web_queue) == []


def test_an_image_the_safety_checker_filtered_is_a_tile_saying_so(
    page: Page, web_images: Path
) -> None:
    """Its sidecar's `nsfw` flag: a neutral "Filtered" tile with the reason, never the PNG
    (which a worker wrote black)."""
    stem = "e" * 32
    flagged = write_image(web_images, stem, 1, 0.1, "A filtered picture", nsfw=[True])
    try:
        tile = page.locator(f'[data-filtered="true"][data-name="{flagged.name}"]')
        expect(tile).to_be_visible()
        expect(tile).to_contain_text("Filtered")
        expect(tile).to_contain_text("The safety checker held this image back.")
        assert flagged.name not in shown(page)
    finally:
        flagged.unlink()
        (web_images / f"{stem}.json").unlink()
    expect(page.locator(f'[data-name="{flagged.name}"]')).to_have_count(0)


def test_new_and_deleted_images_reach_two_tabs_live(
    browser: Browser, page: Page, harness, web_images: Path
) -> None:
    other = browser.new_page()
    other.goto(harness.frontend_url)
    expect(other.locator("img[data-name]").first).to_be_visible()
    before = shown(page)
    assert before == shown(other)
    assert len(before) == HARNESS_GALLERY_SIZE

    fresh_name = f"{'f' * 32}-1.png"
    for tab in (page, other):
        tab.evaluate(SEEN_AT, fresh_name)
    fresh = write_image(web_images, "f" * 32, 1, 0.55, "Live from the folder")
    for tab in (page, other):
        expect(tab.locator("img[data-name]").first).to_have_attribute("data-name", fresh.name)
    renamed_ms = fresh.stat().st_ctime * 1000  # the rename into place sets ctime
    latency_ms = max(tab.evaluate("window.__seenAt") for tab in (page, other)) - renamed_ms
    print(f"\npush latency, PNG renamed into place -> shown in both tabs: {latency_ms:.0f} ms")
    assert shown(page) == [fresh.name, *before[:-1]]

    fresh.unlink()
    for tab in (page, other):
        expect(tab.locator("img[data-name]").first).to_have_attribute("data-name", before[0])
    assert shown(other) == before  # the next newest took the freed place
    other.close()


def settled(count: Callable[[], int], seconds: float = 10.0) -> int:
    """`count()` once it has stopped changing for a second."""
    deadline = time.monotonic() + seconds
    last, stable_since = count(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - stable_since < 1:
        time.sleep(0.1)
        if count() != last:
            last, stable_since = count(), time.monotonic()
    return last


def test_one_feed_for_all_tabs_and_closed_tabs_leave(browser: Browser, harness) -> None:
    """However many tabs are open, one loop follows the gallery (the live feed) and each tab
    is one member of its room; a reload or a close leaves no loop or member behind."""
    from sd_webui import job_state
    from sd_webui.gallery import get_gallery
    from sd_webui.live_feed import ROOM

    namespace = harness.app_instance.event_namespace

    def members() -> int:
        return len(dict(namespace.server.manager.get_participants(namespace.namespace, ROOM)))

    def loops() -> int:
        return len(job_state._loops)

    base_members, base_loops = settled(members), settled(loops)
    tabs = [browser.new_page() for _ in range(3)]
    for tab in tabs:
        tab.goto(harness.frontend_url)
        expect(tab.locator("img[data-name]").first).to_be_visible()
    assert (settled(members), settled(loops)) == (base_members + 3, base_loops + 3)
    assert get_gallery().listeners == 1  # the feed alone, not one loop per tab
    tabs[0].reload()
    expect(tabs[0].locator("img[data-name]").first).to_be_visible()
    assert (settled(members), settled(loops)) == (base_members + 3, base_loops + 3)
    for tab in tabs:
        tab.close()
    assert (settled(members), settled(loops)) == (base_members, base_loops)


def test_the_page_has_its_icons_and_link_preview(page: Page) -> None:
    """The browser tab's icon (SVG, with ICO and touch-icon fallbacks) and the Open Graph
    preview a chat app shows for a link: each is served, and is the picture it says it is."""
    icons = page.locator("link[rel=icon], link[rel=apple-touch-icon]")
    hrefs = icons.evaluate_all("els => els.map(e => e.href)")
    preview = page.locator("meta[property='og:image']").get_attribute("content")
    assert preview == "/og-image.png"
    expect(page.locator("meta[property='og:title']")).to_have_attribute("content", re.compile("."))
    pictures = {}
    for url in [*hrefs, urllib.parse.urljoin(page.url, preview)]:
        response = page.request.get(url)
        assert response.ok, url
        name = url.rsplit("/", 1)[1]
        if name.endswith(".svg"):
            assert "<svg" in response.text() and "svg" in response.headers["content-type"]
        else:
            pictures[name] = Image.open(io.BytesIO(response.body()))
    assert sorted(pictures) == ["apple-touch-icon.png", "favicon.ico", "og-image.png"]
    assert pictures["favicon.ico"].format == "ICO"
    assert (16, 16) in pictures["favicon.ico"].ico.sizes()
    assert pictures["apple-touch-icon.png"].size == (180, 180)
    assert pictures["og-image.png"].size == (1200, 630)


def test_hover_card_shows_the_metadata(page: Page) -> None:
    page.locator("img[data-name]").first.hover()
    card = page.locator("[data-radix-popper-content-wrapper]")
    expect(card).to_contain_text("Generated: ")
    expect(card).to_contain_text(re.compile(r"(seconds|minutes?) ago"))
    expect(card).to_contain_text("Model: stabilityai/sd-turbo")
    expect(card).to_contain_text("LoraModel: Lykon/dreamshaper-8")
    expect(card).to_contain_text("Size: 512x512px")
    expect(card).to_contain_text(PROMPTS[-1])


def test_full_view_use_this_prompt_and_closing(page: Page, seeded: list[Path]) -> None:
    newest = seeded[-1]
    page.locator(f"img[data-name='{newest.name}']").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(PROMPTS[-1])
    for text in ("Negative prompt: blurry", "Seed: ", "Steps: 1", "Guidance: 0", "Job id: "):
        expect(dialog).to_contain_text(text)
    expect(dialog).to_contain_text(newest.name.rpartition("-")[0])
    expect(dialog.get_by_role("link")).to_have_attribute("href", re.compile(newest.name))
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    page.locator(f"img[data-name='{newest.name}']").click()
    expect(dialog).to_be_visible()
    # A click on the backdrop, outside the card: through the locator, which waits until the
    # dialog stands still (a raw mouse click could land before it listens for outside clicks).
    page.locator(".rt-DialogOverlay").click(position={"x": 5, "y": 5})
    expect(dialog).to_be_hidden()

    page.locator(f"img[data-name='{newest.name}']").click()
    dialog.get_by_role("button", name="Use this prompt").click()
    expect(dialog).to_be_hidden()
    prompt = page.get_by_placeholder("Yellow submarine")
    expect(prompt).to_have_value(PROMPTS[-1])
    expect(prompt).to_be_focused()


def raw_get(backend_url: str, path: str) -> http.client.HTTPResponse:
    """A request with the path sent exactly as written (no client-side `..` normalisation)."""
    host = urllib.parse.urlsplit(backend_url)
    connection = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_images_are_served_with_type_and_caching(backend_url: str, seeded: list[Path]) -> None:
    response = raw_get(backend_url, f"/images/{seeded[0].name}")
    assert response.status == 200
    assert response.getheader("content-type") == "image/png"
    assert response.getheader("cache-control") == "public, max-age=31536000, immutable"
    assert raw_get(backend_url, "/healthz").status == 200
    assert raw_get(backend_url, "/readyz").status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/images/../../../../etc/passwd",
        "/images/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/images/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/images/%2Fetc%2Fpasswd",
        "/images//etc/passwd",
        "/images/outside-link.png",
        "/images/.hidden-1.png",
        "/images/missing-1.png",
        "/images/../pyproject.toml",
        # Names no file can have: 404 as well, never a 500 with a traceback in the log.
        "/images/x.png%00.png",
        "/images/%00",
        "/images/" + "a" * 5000 + ".png",
        "/images/" + "%C3%A9" * 200 + ".png",
        "/images/%ff%fe.png",
        "/images/%ed%a0%80-1.png",
        "/images/%C0%AE%C0%AE/secret.png",
    ],
)
def test_nothing_outside_the_folder_is_reachable(
    backend_url: str, web_images: Path, tmp_path: Path, path: str
) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not for you")
    link = web_images / "outside-link.png"
    if not link.is_symlink():
        link.symlink_to(secret)
    (web_images / ".hidden-1.png").write_bytes(b"temp")
    assert raw_get(backend_url, path).status == 404


# Each gallery image's box and what is painted in it, beside its card's box (CSS pixels).
IMAGE_BOXES = """els => els.map(img => {
    const box = img.getBoundingClientRect();
    const card = img.closest(".gallery-card").getBoundingClientRect();
    const style = getComputedStyle(img);
    return {name: img.dataset.name, width: box.width, height: box.height,
            cardWidth: card.width, fit: style.objectFit, position: style.objectPosition,
            natural: [img.naturalWidth, img.naturalHeight]};
})"""
ALL_LOADED = (
    "() => [...document.querySelectorAll('img[data-name]')]"
    ".every(img => img.complete && img.naturalWidth > 0)"
)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_every_image_is_fitted_to_its_card(page: Page, viewport: dict[str, int]) -> None:
    """Whatever its pixel size (64x64 to 1024x1024, portrait, landscape), every image fills the
    same square box, as wide as its card, and is scaled into it whole, its aspect kept."""
    page.set_viewport_size(viewport)
    page.wait_for_function(ALL_LOADED)
    boxes = page.locator("img[data-name]").evaluate_all(IMAGE_BOXES)
    assert {tuple(box["natural"]) for box in boxes} >= {(64, 64), (1024, 256), (512, 768)}
    side = boxes[0]["cardWidth"]
    assert side > 150  # far above the 64x64 image's own size, on the phone too
    for box in boxes:
        assert box["width"] == pytest.approx(side, abs=1), box
        assert box["height"] == pytest.approx(side, abs=1), box
        assert (box["fit"], box["position"]) == ("contain", "50% 50%"), box


@pytest.mark.parametrize(("name", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_screenshots(page: Page, name: str, viewport: dict[str, int], screenshot_dir: Path) -> None:
    page.set_viewport_size(viewport)
    page.mouse.move(0, 0)
    page.wait_for_function(ALL_LOADED)
    target = screenshot_dir / f"screenshot-{name}.png"
    # On a phone the grid is one column: show the first few cards, not only the first one.
    height = viewport["height"] * (2 if name == "phone" else 1)
    clip = {"x": 0, "y": 0, "width": viewport["width"], "height": height}
    page.screenshot(path=str(target), full_page=True, clip=clip)
    assert target.stat().st_size > 10_000
    assert os.access(target, os.R_OK)
