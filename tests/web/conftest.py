"""The app under reflex.testing.AppHarness, headless Chromium, and images to drop in its folder."""

import colorsys
import json
import math
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from PIL import Image, ImageDraw, ImageFilter

from tests.conftest import chromium, delete_queues, run_async, unavailable

ROOT = Path(__file__).resolve().parents[2]
HARNESS_GALLERY_SIZE = 8
T = TypeVar("T")


def write_image(
    folder: Path,
    stem: str,
    n: int,
    hue: float,
    prompt: str,
    count: int = 1,
    size: tuple[int, int] = (512, 512),
    nsfw: list[bool] | None = None,
) -> Path:
    """A soft abstract picture of `size` (width, height) plus its FastSD sidecar, each renamed
    into place whole. `nsfw`: the safety checker's flags, as a worker with it records them."""
    width, height = size
    seed = 1000 + n + int(hue * 100)
    sidecar = {
        "lcm_model_id": "stabilityai/sd-turbo",
        "lcm_lora": {"base_model_id": "Lykon/dreamshaper-8"},
        "prompt": prompt,
        "negative_prompt": "blurry",
        "image_width": width,
        "image_height": height,
        "inference_steps": 1,
        "guidance_scale": 0.0,
        "number_of_images": count,
        "seed": seed - n + 1,
        "use_seed": True,
        "image_seeds": [seed - n + 1 + index for index in range(count)],
    }
    if nsfw is not None:
        sidecar |= {"use_safety_checker": True, "nsfw": nsfw}
    json_temp = folder / f".{stem}.json.tmp"
    json_temp.write_text(json.dumps(sidecar, indent=4))
    json_temp.rename(folder / f"{stem}.json")
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        r, g, b = colorsys.hsv_to_rgb((hue + y / height / 4) % 1, 0.55, 0.25 + 0.5 * y / height)
        draw.line([(0, y), (width, y)], fill=(int(r * 255), int(g * 255), int(b * 255)))
    scale = min(width, height) / 512
    for index in range(6):
        angle = hue * 6.28 + index * 1.7 + n
        x = width / 2 + 150 * scale * math.cos(angle)
        y = height / 2 + 150 * scale * math.sin(angle * 1.3)
        radius = (40 + 25 * ((index + n) % 3)) * scale
        r, g, b = colorsys.hsv_to_rgb((hue + 0.08 * index) % 1, 0.6, 0.95)
        draw.ellipse(
            [x - radius, y - radius, x + radius, y + radius],
            fill=(int(r * 255), int(g * 255), int(b * 255)),
        )
    image = image.filter(ImageFilter.GaussianBlur(6 * scale))
    png_temp = folder / f".{stem}-{n}.png.tmp"
    image.save(png_temp, format="PNG")
    final = folder / f"{stem}-{n}.png"
    png_temp.rename(final)
    return final


@pytest.fixture(scope="session")
def web_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("web-images")


@pytest.fixture(scope="session")
def web_queue(amqp_url: str) -> Iterator[str]:
    """The harness's queue for the whole session (its own name), deleted afterwards."""
    name = f"test-web-{uuid.uuid4().hex[:12]}"
    yield name

    run_async(delete_queues(amqp_url, name, f"{name}.dead"))


HARNESS_STOP_S = 30


def stop_harness(app: Any) -> None:
    """`AppHarness.stop()`, bounded.

    Its backend thread ends once uvicorn's loop has cancelled every task; a library task that
    outlives that (seen now and then: socket.io's ping loops, Reflex's event queue processor)
    would hang the session forever, so after HARNESS_STOP_S the loop is stopped outright.
    """
    thread, app.backend_thread = app.backend_thread, None
    loops = {server._loop for server in getattr(app.backend, "servers", [])}
    app.stop()
    thread.join(HARNESS_STOP_S)
    if thread.is_alive():
        for loop in loops:
            loop.call_soon_threadsafe(loop.stop)
        thread.join(HARNESS_STOP_S)
    assert not thread.is_alive(), "the app's backend thread did not stop"


@pytest.fixture(scope="module")
def harness(web_images: Path, web_queue: str, amqp_url: str) -> Iterator[object]:
    """The real app (backend in-process, dev frontend) configured through the environment.

    Module-scoped: the app's backend loop shares this process's singletons (the event hub, the
    sink), so it is stopped before other modules' in-process workers and hubs run."""
    if not shutil.which("bun") and not shutil.which("npm"):
        unavailable("no JavaScript runtime to build the frontend")
    from reflex.testing import AppHarness

    from sd_webui import gallery, live_feed, publishing
    from sd_webui.queue_stats import get_queue_stats
    from sd_webui.settings import get_settings

    patch = pytest.MonkeyPatch()
    patch.setenv("IMAGES_DIR", str(web_images))
    patch.setenv("AMQP_URL", amqp_url)
    patch.setenv("QUEUE_NAME", web_queue)
    patch.setenv("GALLERY_SIZE", str(HARNESS_GALLERY_SIZE))
    patch.setenv("REFLEX_USE_SYSTEM_BUN", "1")
    get_settings.cache_clear()
    get_queue_stats.cache_clear()
    publishing.set_sink(None)
    patch.setattr(gallery, "_gallery", None)
    patch.setattr(live_feed, "_feed", None)
    # AppHarness clears Reflex's registry of `rx.memo` components and re-imports only the app
    # module: the component modules (where the memos are) must be imported afresh with it.
    for name in [name for name in sys.modules if name.startswith("sd_webui.components.")]:
        patch.delitem(sys.modules, name)
    app = AppHarness.create(root=ROOT, app_name="sd_webui")
    app.start()
    try:
        yield app
    finally:
        stop_harness(app)
    patch.undo()
    get_settings.cache_clear()
    get_queue_stats.cache_clear()
    publishing.set_sink(None)


@pytest.fixture(scope="module")
def backend_url(harness: object) -> str:
    from reflex.config import get_config

    return get_config().api_url.rstrip("/")


@pytest.fixture(scope="module")
def browser(harness: object) -> Iterator[object]:
    """Chromium for one test module."""
    with chromium() as browser:
        yield browser
