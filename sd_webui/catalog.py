"""Every image of the folder, newest first, in pages: what the jobs API lists.

The gallery keeps only the newest few; the API pages through all of them (the folder may hold
100,000 images). The catalog holds one `(mtime_ns, name)` key per final PNG, about 100 bytes
each, kept sorted by the same scan and watcher events as the gallery; a page is a bisect and a
slice, and only its own images' sidecars are read. A cursor is the key of a page's last image,
so pages stay free of duplicates and gaps while new images land above them.
"""

import base64
import bisect
import threading
from pathlib import Path

from watchfiles import Change

from sd_webui.image_files import Entry, Key, folder_keys, is_candidate, key_of, load_entry

MAX_PAGE = 100


class BadCursor(ValueError):
    """A `before` cursor this catalog did not hand out."""


def encode_cursor(key: Key) -> str:
    mtime_ns, name = key
    return base64.urlsafe_b64encode(f"{mtime_ns}/{name}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Key:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        mtime, name = text.split("/", 1)
        return int(mtime), name
    except ValueError as error:  # bad base64, UTF-8, separator or number
        raise BadCursor("not a cursor this server handed out") from error


class ImageCatalog:
    """The sorted keys of every final PNG in one folder (the watcher's thread writes, request
    handlers read: a lock keeps each page consistent)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._keys: list[Key] = []  # ascending: newest last
        self._by_name: dict[str, Key] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._keys)

    def scan(self) -> list[Key]:
        """List the folder afresh; returns the keys (ascending), which the caller must not
        change (the gallery ranks its newest from them)."""
        keys = list(folder_keys(self.folder))
        keys.sort()  # in place: one list of every key at its peak, not two
        with self._lock:
            self._keys, self._by_name = keys, {key[1]: key for key in keys}
        return keys

    def apply(self, changes: set[tuple[Change, str]]) -> list[str]:
        """One batch of watcher changes (the gallery's own batch); returns the PNGs that landed."""
        landed = []
        for change, path in changes:
            where = Path(path)
            if where.parent != self.folder or not is_candidate(where.name):
                continue
            key = None if change == Change.deleted else key_of(where)
            with self._lock:
                old = self._by_name.pop(where.name, None)
                if old is not None:
                    del self._keys[bisect.bisect_left(self._keys, old)]
                if key is not None:
                    bisect.insort(self._keys, key)
                    self._by_name[where.name] = key
                    landed.append(where.name)
        return landed

    def page(self, limit: int, before: Key | None = None) -> tuple[list[Key], Key | None]:
        """Up to `limit` keys older than `before` (from the newest without), newest first, and
        the cursor of the next page (None on the last)."""
        with self._lock:
            end = len(self._keys) if before is None else bisect.bisect_left(self._keys, before)
            start = max(0, end - limit)
            keys = self._keys[start:end][::-1]
        return keys, (keys[-1] if start > 0 and keys else None)

    def entries(self, keys: list[Key]) -> list[Entry]:
        """The keys' images with their metadata (blocking reads: call in a thread); a PNG that
        is not whole is left out."""
        loaded = (load_entry(self.folder, key) for key in keys)
        return [entry for entry in loaded if entry is not None]
