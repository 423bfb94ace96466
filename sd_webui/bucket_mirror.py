"""A web replica's images folder as a copy of the bucket's newest images (S3_BUCKET).

The gallery and the API read IMAGES_DIR. With a bucket, that folder is the replica's own (an
emptyDir under Kubernetes) and this mirror fills it, two ways:
- a job's files are downloaded when its `done` event arrives, and only then is the event passed
  on to the hub, so a page or an API caller that sees `done` finds the files here;
- at start and every S3_MIRROR_INTERVAL_S the folder is compared with the bucket: the newest
  S3_MIRROR_KEEP images (and their sidecars) are downloaded where missing, newest first, and
  anything older or gone from the bucket is removed, so the folder never outgrows its volume.
Each file's mtime is when its worker wrote it (the object's metadata), so a fresh replica's
gallery shows the same newest images, in the same order and with the same ages, as the others.
The mirror also gives the bucket its lifecycle rule (S3_RETENTION_DAYS) once it reaches it.
"""

import asyncio
import heapq
import logging
import os
import stat
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import lru_cache

from botocore.exceptions import ClientError

from sd_webui.bucket import Bucket, BucketError, StoredImage, error_text
from sd_webui.events import EventHub, JobEvent, get_hub
from sd_webui.image_files import is_candidate, job_stem
from sd_webui.settings import Settings, get_settings

log = logging.getLogger(__name__)

DOWNLOADS_IN_PARALLEL = 4
# A `done` job's files: tries, 1 s apart then doubling, before its event is passed on anyway
# (the next comparison brings the files).
LAND_TRIES = 4
# A hidden temporary file older than this is left over from a download that was killed.
STALE_TEMPORARY_NS = 10 * 60 * 1_000_000_000


def newest_images(images: Iterable[StoredImage], keep: int) -> list[StoredImage]:
    """The `keep` newest images by LastModified and every one that ties with the oldest of them
    (S3's dates have whole seconds; the exact order is the metadata's), newest first. One pass,
    holding only those, however many the bucket has."""
    groups: dict[datetime, list[StoredImage]] = {}
    times: list[datetime] = []  # the groups' dates, a heap: the oldest first
    count = 0
    for image in images:
        when = image.last_modified
        if when in groups:
            groups[when].append(image)
        elif count < keep or when > times[0]:
            groups[when] = [image]
            heapq.heappush(times, when)
        else:
            continue
        count += 1
        while count - len(groups[times[0]]) >= keep:  # the oldest group is not needed
            count -= len(groups.pop(heapq.heappop(times)))
    found = [image for group in groups.values() for image in group]
    return sorted(found, key=lambda image: (image.last_modified, image.name), reverse=True)


class BucketMirror:
    """The copy of one bucket in one folder; the EventSubscriber's target in place of the hub."""

    def __init__(self, settings: Settings, hub: EventHub) -> None:
        self.bucket = Bucket(settings)
        self.folder = settings.images_dir
        self.keep = settings.s3_mirror_keep
        self.interval_s = settings.s3_mirror_interval_s
        self.retention_days = settings.s3_retention_days
        self.hub = hub
        self.synced = False  # the first comparison is done: the folder matches the bucket
        self.last_error: str | None = None  # of the latest comparison; None when it succeeded
        self.compared_at: float | None = None  # time.time() of the latest successful one
        self._retention_set = self.retention_days == 0  # 0: the bucket's lifecycle is left alone
        self._below: set[str] = set()  # in the bucket, removed here: older than the newest kept
        self._landing: set[asyncio.Task[None]] = set()
        self._pool = ThreadPoolExecutor(DOWNLOADS_IN_PARALLEL, thread_name_prefix="mirror")

    def publish(self, event: JobEvent) -> None:
        """An event from the workers: a `done` one once its files are here, the rest at once."""
        if event.state != "done" or not event.files:
            self.hub.publish(event)
            return
        task = asyncio.create_task(self._land(event), name=f"land-{event.id}")
        self._landing.add(task)
        task.add_done_callback(self._landing.discard)

    async def _land(self, event: JobEvent) -> None:
        delay = 1.0
        for attempt in range(1, LAND_TRIES + 1):
            try:
                await asyncio.to_thread(self._fetch, event.files or [])
                break
            except (*BucketError, OSError) as error:
                log.warning(
                    "files of job %s not downloaded (try %d of %d): %s",
                    event.id,
                    attempt,
                    LAND_TRIES,
                    error_text(error),
                )
                if attempt < LAND_TRIES:
                    await asyncio.sleep(delay)
                    delay *= 2
        self.hub.publish(event)

    def _fetch(self, names: list[str]) -> None:
        """Download the files not yet here, in the order given (a job's JSON first)."""
        for name in names:
            if not (self.folder / name).exists():
                self.bucket.download(name, self.folder)

    def _fetch_image(self, name: str) -> None:
        self._fetch([f"{job_stem(name)}.json", name])  # a sidecar missing in the bucket: skipped

    async def run(self) -> None:
        """Compare now and every S3_MIRROR_INTERVAL_S until cancelled (a lifespan task)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                await asyncio.to_thread(self.compare)
            except Exception as error:  # the bucket down, a full volume: try again next time
                self.last_error = error_text(error)
                log.warning("could not compare %s with %s: %s", self.folder, self.bucket, error)
            await asyncio.sleep(self.interval_s)

    def compare(self) -> None:
        """One comparison of the folder with the bucket (blocking)."""
        if not self._retention_set:
            self._set_retention()
        started = time.time_ns()
        newest = newest_images(self.bucket.images(), self.keep)
        stored = {image.name for image in newest}
        self._below &= stored
        wanted = [
            image.name
            for image in newest
            if image.name not in self._below and not (self.folder / image.name).exists()
        ]
        list(self._pool.map(self._fetch_image, wanted))  # raises the first error
        self._prune(stored, started)
        self.synced, self.last_error, self.compared_at = True, None, time.time()
        if wanted:
            log.info("downloaded %d images from %s", len(wanted), self.bucket)

    def _set_retention(self) -> None:
        """The lifecycle rule, once. A bucket that refuses it (no permission, a store without
        lifecycles) is logged and left as it is: the gallery does not wait on it. Connection
        errors propagate, so the next comparison tries again."""
        try:
            self.bucket.set_retention(self.retention_days)
        except ClientError as error:
            log.error(
                "%s refused its lifecycle rule (S3_RETENTION_DAYS=%d; 0 leaves it alone): %s",
                self.bucket,
                self.retention_days,
                error_text(error),
            )
        else:
            log.info("%s: objects expire %d days after upload", self.bucket, self.retention_days)
        self._retention_set = True

    def _prune(self, stored: set[str], started: int) -> None:
        """Keep the newest `keep` images by mtime; remove the rest, the images that were here
        before this comparison began and are not among the bucket's newest (expired, deleted,
        or older), the sidecars of all those and any left without images, and leftovers of
        killed downloads. A sidecar that landed during the comparison without its image yet (a
        `done` job arriving) stays."""
        images: list[tuple[int, str]] = []
        removed: set[str] = set()
        sidecars: dict[str, bool] = {}  # name: landed before the comparison began
        with os.scandir(self.folder) as listing:
            for item in listing:
                info = item.stat(follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode):
                    continue
                earlier = info.st_ctime_ns < started  # it landed before the listing began
                if is_candidate(item.name):
                    if item.name in stored or not earlier:
                        images.append((info.st_mtime_ns, item.name))
                    else:
                        removed.add(item.name)
                elif item.name.endswith(".json") and not item.name.startswith("."):
                    sidecars[item.name] = earlier
                elif item.name.startswith(".") and info.st_ctime_ns < started - STALE_TEMPORARY_NS:
                    self._remove(item.name)
        images.sort(reverse=True)
        for _, name in images[self.keep :]:
            removed.add(name)
            self._below.add(name)
        for name in removed:
            self._remove(name)
        kept = {job_stem(name) for _, name in images[: self.keep]}
        gone = {job_stem(name) for name in removed} - kept
        for name, earlier in sidecars.items():
            job = name.removesuffix(".json")
            if job in gone or (earlier and job not in kept):
                self._remove(name)

    def _remove(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)


@lru_cache
def get_bucket_mirror() -> BucketMirror | None:
    """The process's mirror with S3_BUCKET, else None (IMAGES_DIR is a shared folder)."""
    settings = get_settings()
    return BucketMirror(settings, get_hub()) if settings.s3_bucket else None
