"""The Reflex app: the page, its lifespan tasks (the gallery watcher, the publisher, and with
AMQP_URL the job events subscriber and the queue poller, with S3_BUCKET the bucket's mirror), the
HTTP API (sd_webui/api) and the backend routes that serve images and answer health probes."""

import asyncio
import contextlib
import mimetypes
import os
from datetime import UTC, datetime
from pathlib import Path

import reflex as rx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from sd_webui.api.app import create_api
from sd_webui.api.auth import log_access
from sd_webui.bucket_mirror import get_bucket_mirror
from sd_webui.cancellation import get_cancel_publisher
from sd_webui.components import styles
from sd_webui.components.full_view import full_view
from sd_webui.components.gallery_grid import gallery_grid
from sd_webui.components.job_cards import job_cards
from sd_webui.components.model_status import model_status
from sd_webui.components.navbar import navbar
from sd_webui.components.prompt_bar import prompt_bar
from sd_webui.events import EventSubscriber, get_hub
from sd_webui.gallery import get_gallery
from sd_webui.job_state import JobsState, start_counter
from sd_webui.landing import DoneWhenLanded
from sd_webui.live_feed import GalleryState, get_live_feed
from sd_webui.logs import configure_logging
from sd_webui.publishing import close_sink, get_embedded_queue, queue_snapshot
from sd_webui.queue_stats import get_queue_stats
from sd_webui.settings import get_settings
from sd_webui.shared_registry import get_shared_registry
from sd_webui.state import IMAGE_ROUTE, ModelState

SERVED_SUFFIXES = (".png", ".json")
# The longest file name the folder's file system can hold (bytes); longer names are simply absent.
NAME_MAX = 255
# Names never change content (a redelivered job rewrites identical names), so cache for a year.
IMMUTABLE = "public, max-age=31536000, immutable"


def servable(folder: Path, name: str) -> Path | None:
    """The file `name` directly inside `folder`, or None for anything that escapes it.

    `..` (plain or URL-encoded, already decoded by the router), absolute paths, nested paths and
    symlinks resolving outside the folder all give None, as do hidden temporary files and
    anything but `.png` and `.json` (so `.tmp`, `.part` and `~` names too), and every name no
    file can have: NUL bytes, undecodable bytes, names over NAME_MAX bytes.
    """
    if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(SERVED_SUFFIXES):
        return None
    try:
        if "\0" in name or len(name.encode()) > NAME_MAX:
            return None
        path = (folder / name).resolve()
        return path if path.parent == folder and path.is_file() else None
    except (OSError, ValueError):  # UnicodeEncodeError for lone surrogates is a ValueError
        return None


async def serve_image(request: Request) -> Response:
    folder = get_settings().images_dir.resolve()
    path = servable(folder, request.path_params["name"])
    if path is None:
        return PlainTextResponse("Not found", status_code=404)
    return FileResponse(
        path,
        media_type=mimetypes.guess_type(path.name)[0],
        headers={"Cache-Control": IMMUTABLE},
        content_disposition_type="attachment" if "download" in request.query_params else "inline",
        filename=path.name if "download" in request.query_params else None,
    )


async def healthz(request: Request) -> Response:
    """Liveness: the process answers."""
    return PlainTextResponse("ok")


def folder_readable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.R_OK | os.X_OK)


async def readyz(request: Request) -> Response:
    """Readiness: this process can serve the page, i.e. the images folder is readable and the
    gallery's first scan is done. Not the broker: a broker restart must not take the page (and
    the gallery) out of service; `/status` tells the broker's state."""
    folder = get_settings().images_dir
    if not folder_readable(folder):
        return PlainTextResponse(f"images folder {folder} is not readable", status_code=503)
    if not get_gallery().scanned:
        return PlainTextResponse("the first scan of the images folder is not done", 503)
    if (mirror := get_bucket_mirror()) is not None and not mirror.synced:
        why = f": {mirror.last_error}" if mirror.last_error else ""
        return PlainTextResponse(f"the first copy from the bucket is not done{why}", 503)
    return PlainTextResponse("ok")


async def status(request: Request) -> Response:
    """What this web app sees now, as JSON: the broker (reachable at the latest poll, which runs
    every POLL_INTERVAL_S and counts as unreachable once three intervals old; null without
    AMQP_URL), the queue's figures, the images folder, the gallery and Redis."""
    settings, stats, snapshot = get_settings(), get_queue_stats(), queue_snapshot()
    feed = get_live_feed()
    return JSONResponse(
        {
            "broker_reachable": None if stats is None else stats.broker_reachable(),
            "queue": settings.queue_name,
            "waiting": None if snapshot is None else snapshot.waiting,
            "workers": None if snapshot is None else snapshot.workers,
            "checked_at": None if snapshot is None else snapshot.at.isoformat(),
            "images_readable": folder_readable(settings.images_dir),
            "gallery_scanned": get_gallery().scanned,
            # With REDIS_URL: Redis answered the feed's latest ping (every POLL_INTERVAL_S).
            "redis_reachable": None if settings.redis_url is None else not feed.redis_down,
            # With S3_BUCKET: the latest comparison with the bucket (every S3_MIRROR_INTERVAL_S).
            **bucket_status(),
        },
        headers={"Cache-Control": "no-store"},
    )


def bucket_status() -> dict[str, object]:
    mirror = get_bucket_mirror()
    if mirror is None:
        return {"bucket_reachable": None}
    compared = mirror.compared_at
    return {
        "bucket_reachable": mirror.synced and mirror.last_error is None,
        "bucket_error": mirror.last_error,
        "bucket_compared_at": (
            None if compared is None else datetime.fromtimestamp(compared, UTC).isoformat()
        ),
    }


async def metrics(request: Request) -> Response:
    """Prometheus: `sd_web_broker_up` and the queue's figures (and, in embedded mode, the
    worker's series)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


# The API's FastAPI app, with the routes of the images and the probes (not in its schema).
backend = create_api()
backend.router.routes.extend(
    [
        Route(f"{IMAGE_ROUTE}/{{name:path}}", serve_image, methods=["GET", "HEAD"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/status", status),
        Route("/metrics", metrics),
    ]
)


@contextlib.asynccontextmanager
async def lifespan():
    """One gallery watcher and one live feed per process while the app serves; with
    `AMQP_URL`, one job events subscriber and one queue poller, else the embedded worker (which
    feeds the hub itself); with `REDIS_URL`, the writer of the shared job registry; with
    `S3_BUCKET`, the mirror of the bucket (the subscriber's `done` events wait for its
    downloads); the connections closed at the end."""
    settings = get_settings()
    log_access()
    start_counter()  # counts job starts from now on, for the queued cards' "jobs ahead"
    gallery = get_gallery()
    gallery.on_landed.append(DoneWhenLanded(gallery.index.folder, get_hub()))
    tasks = [
        asyncio.create_task(gallery.watch(), name="gallery-watcher"),
        asyncio.create_task(get_live_feed().run(), name="live-feed"),
    ]
    if (shared := get_shared_registry()) is not None:
        get_hub().add_listener(shared)
        tasks.append(asyncio.create_task(shared.run(), name="shared-registry"))
    if (queue := get_embedded_queue()) is not None:
        tasks.append(asyncio.create_task(queue.run(), name="embedded-worker"))
    if (mirror := get_bucket_mirror()) is not None:
        tasks.append(asyncio.create_task(mirror.run(), name="bucket-mirror"))
    if settings.amqp_url and (stats := get_queue_stats()) is not None:
        target = mirror or get_hub()  # with a bucket, `done` waits for the job's files
        subscriber = EventSubscriber(settings.amqp_url, settings.events_exchange, target)
        tasks.append(asyncio.create_task(subscriber.run(), name="job-events"))
        tasks.append(asyncio.create_task(stats.run(), name="queue-stats"))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks)
        await close_sink()
        if shared is not None:
            await shared.close()
        await get_cancel_publisher().close()


def index() -> rx.Component:
    return rx.box(
        navbar(),
        rx.vstack(
            model_status(),
            prompt_bar(),
            job_cards(),
            gallery_grid(),
            spacing="6",
            style=styles.PAGE,
        ),
        full_view(),
        min_height="100vh",
    )


DESCRIPTION = "Self-hosted Stable Diffusion: type a prompt, watch the images appear live."
# The icons and the link preview live in assets/ (scripts/render_assets.py draws them).
ICONS = [
    rx.el.link(rel="icon", href="/favicon.svg", type="image/svg+xml"),
    rx.el.link(rel="icon", href="/favicon.ico", sizes="48x48"),
    rx.el.link(rel="apple-touch-icon", href="/apple-touch-icon.png"),
]
PREVIEW = [
    {"property": "og:type", "content": "website"},
    {"property": "og:title", "content": "Stable Diffusion"},
    {"property": "og:description", "content": DESCRIPTION},
    {"property": "og:image:width", "content": "1200"},
    {"property": "og:image:height", "content": "630"},
    {"name": "twitter:card", "content": "summary_large_image"},
    {"name": "theme-color", "content": "#111a2e"},
]

configure_logging()
# The dark theme with sky-blue accents is configured in rxconfig.py (RadixThemesPlugin).
app = rx.App(api_transformer=backend, head_components=ICONS)
app.add_page(
    index,
    title=JobsState.tab_title,  # "[42%] Stable Diffusion" while a job of this tab runs
    description=DESCRIPTION,
    image="/og-image.png",
    meta=PREVIEW,
    on_load=[GalleryState.join, ModelState.follow, JobsState.follow],
)
app.register_lifespan_task(lifespan)
