"""The newest-N index over the images folder, fed by one watcher per process.

The old web UI listed the folder, read every JSON and sorted everything on every poll of every
browser. Here one `os.scandir` pass at startup keeps the newest images by mtime (reading only
their JSON), and one `watchfiles` watcher applies each change to that bounded index; browser
sessions wait on `Gallery.wait_for_change` and are woken on every change, with no polling.
The same watcher keeps the catalog of every image (the API's pages, sd_webui/catalog.py) and
tells `on_landed` listeners which PNGs arrived (sd_webui/landing.py).
"""

import asyncio
import bisect
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, awatch

from sd_webui.catalog import ImageCatalog
from sd_webui.image_files import (
    Entry,
    Key,
    folder_keys,
    is_candidate,
    job_stem,
    key_of,
    load_entry,
)

log = logging.getLogger(__name__)


class GalleryIndex:
    """The newest `size` images of one folder, plus a bounded reserve of the next candidates.

    `_ranked` holds the keys of the newest `size + reserve` PNGs; metadata is read only for the
    visible first `size`. When a visible image is deleted, the next newest is promoted from the
    reserve, so the common case costs no folder scan. Only when deletions have drained the
    reserve below `size` while older files exist (`_beyond`) is the folder scanned again: one
    `os.scandir` pass at most once per `reserve` deletions, instead of one per change. Memory
    stays bounded by `size + reserve`, whatever the folder holds.
    """

    def __init__(self, folder: Path, size: int, reserve: int | None = None) -> None:
        self.folder = folder
        self.size = size
        self.reserve = size if reserve is None else reserve
        self.scans = 0
        self._ranked: list[Key] = []
        self._keys: dict[str, Key] = {}
        self._entries: dict[str, Entry] = {}
        self._broken: set[str] = set()
        self._beyond = False

    def scan(self, keys: list[Key] | None = None) -> None:
        """Rank the folder from scratch (from `keys` when the caller just listed it) and load
        the visible images' metadata."""
        self._rank_folder(keys)
        self._refresh_visible(reload=set())

    def entries(self) -> list[Entry]:
        """The visible images, newest first."""
        return [self._entries[name] for _, name in reversed(self._ranked[-self.size :])]

    def apply(self, changes: set[tuple[Change, str]]) -> bool:
        """Apply one batch of watcher changes; returns whether the visible images changed."""
        before = self.entries()
        reload: set[str] = set()
        for change, path in changes:
            where = Path(path)
            if where.parent != self.folder:
                continue
            if where.name.endswith(".json") and not where.name.startswith("."):
                stem = where.name.removesuffix(".json")
                reload |= {name for name in self._entries if job_stem(name) == stem}
            elif is_candidate(where.name):
                self._discard(where.name)
                self._broken.discard(where.name)
                if change != Change.deleted:
                    self._add(where)
                    reload.add(where.name)
        self._refresh_visible(reload)
        return self.entries() != before

    def _rank_folder(self, listed: list[Key] | None = None) -> None:
        """Keep the newest keys, from `listed` (every key, ascending: the catalog's scan) or
        else one `os.scandir` pass through a bounded heap; no JSON is read."""
        limit = self.size + self.reserve
        if listed is not None:
            usable = (key for key in reversed(listed) if key[1] not in self._broken)
            newest = list(itertools.islice(usable, limit + 1))  # one more: are there older?
        else:
            usable = (key for key in folder_keys(self.folder) if key[1] not in self._broken)
            newest = heapq.nlargest(limit + 1, usable)
        self._ranked, self._beyond = newest[:limit][::-1], len(newest) > limit
        self._keys = {name: (mtime, name) for mtime, name in self._ranked}
        self.scans += 1

    def _add(self, path: Path) -> None:
        key = key_of(path)
        if key is None:
            return
        if len(self._ranked) >= self.size + self.reserve and key < self._ranked[0]:
            self._beyond = True
            return
        bisect.insort(self._ranked, key)
        self._keys[path.name] = key
        if len(self._ranked) > self.size + self.reserve:
            del self._keys[self._ranked.pop(0)[1]]
            self._beyond = True

    def _discard(self, name: str) -> None:
        key = self._keys.pop(name, None)
        if key is not None:
            del self._ranked[bisect.bisect_left(self._ranked, key)]
        self._entries.pop(name, None)

    def _refresh_visible(self, reload: set[str]) -> None:
        """Load metadata for images entering the visible set, or whose JSON changed.

        A PNG that is not whole is set aside until its next change event brings it back, and
        the next candidate takes its place.
        """
        while True:
            if len(self._ranked) < self.size and self._beyond:
                self._rank_folder()
            visible = {name for _, name in self._ranked[-self.size :]}
            for name in set(self._entries) - visible:
                del self._entries[name]
            broken = [
                name
                for name in visible
                if (name not in self._entries or name in reload) and not self._load(name)
            ]
            if not broken:
                return
            for name in broken:
                self._discard(name)
                self._broken.add(name)
            reload = set()

    def _load(self, name: str) -> bool:
        entry = load_entry(self.folder, self._keys[name])
        if entry is not None:
            self._entries[name] = entry
        return entry is not None


class Gallery:
    """The process-wide gallery: one index, one watcher task, many waiting browser sessions."""

    def __init__(self, folder: Path, size: int) -> None:
        self.index = GalleryIndex(folder.resolve(), size)
        self.catalog = ImageCatalog(folder.resolve())  # every image, for the API's pages
        # Called with the names of the PNGs each batch of changes brought (sd_webui/landing.py).
        self.on_landed: list[Callable[[list[str]], Awaitable[None]]] = []
        self.snapshot: tuple[Entry, ...] = ()
        self.version = 0
        self.listeners = 0
        self._changed = asyncio.Event()

    def _publish(self) -> None:
        self.snapshot = tuple(self.index.entries())
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    @property
    def scanned(self) -> bool:
        """Whether the first scan is done: before it, an empty gallery means nothing yet."""
        return self.version > 0

    async def scan(self) -> None:
        """Rank the folder afresh and show the result (the watch's first step)."""
        keys = await asyncio.to_thread(self.catalog.scan)  # one listing for both
        await asyncio.to_thread(self.index.scan, keys)
        self._publish()

    def _apply(self, changes: set[tuple[Change, str]]) -> tuple[list[str], bool]:
        """One batch of changes to the catalog and the index, in one trip to a thread: the
        PNGs that landed, and whether the visible images changed."""
        return self.catalog.apply(changes), self.index.apply(changes)

    async def wait_for_change(self, seen: int) -> None:
        """Return once `version` has moved past `seen` (at once if it already has)."""
        if self.version != seen:
            return
        self.listeners += 1
        try:
            await self._changed.wait()
        finally:
            self.listeners -= 1

    async def watch(self) -> None:
        """Scan, then apply every change the watcher reports, until cancelled.

        A failure (folder removed, a bug) is logged and the watch restarts from a fresh scan,
        so the page keeps working.
        """
        folder = self.index.folder
        while True:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                await self.scan()
                log.info("gallery: watching %s (%d images shown)", folder, len(self.snapshot))
                async for changes in awatch(folder, watch_filter=None, recursive=False):
                    landed, visible_changed = await asyncio.to_thread(self._apply, changes)
                    if visible_changed:
                        self._publish()
                    for listener in self.on_landed if landed else ():
                        await listener(landed)
            except Exception:
                log.exception("gallery: watcher failed; restarting in 1 s")
                await asyncio.sleep(1)


_gallery: Gallery | None = None


def get_gallery() -> Gallery:
    """The one gallery of this process (created on first use from the settings)."""
    global _gallery
    if _gallery is None:
        from sd_webui.settings import get_settings

        settings = get_settings()
        _gallery = Gallery(settings.images_dir, settings.gallery_size)
    return _gallery
