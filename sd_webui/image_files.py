"""The images folder's files as the web app reads them: which names are final PNGs, whether one
is whole, its job and place in that job, and its metadata from the job's sidecar (contract 2)."""

import json
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sd_webui.metadata import ImageInfo, parse_image_info

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"
TEMP_SUFFIXES = (".tmp", ".part", "~")

# (st_mtime_ns, name): sorted ascending, the newest is last; equal mtimes order by name.
Key = tuple[int, str]


@dataclass(frozen=True)
class Entry:
    """One image of the gallery: its file name, when it landed and what is known about it."""

    name: str
    mtime_ns: int
    info: ImageInfo

    @property
    def job_id(self) -> str:
        return job_stem(self.name)


def job_stem(png_name: str) -> str:
    """`<id>-<n>.png` -> `<id>` (cut at the last "-"); a name without "-" is its own job."""
    stem = png_name.removesuffix(".png")
    return stem.rpartition("-")[0] or stem


def image_index(png_name: str) -> int:
    """`<id>-<n>.png` -> n-1, the image's place in its job's `image_seeds` (0 when unknown)."""
    number = png_name.removesuffix(".png").rpartition("-")[2]
    return int(number) - 1 if number.isdigit() and int(number) > 0 else 0


def is_candidate(name: str) -> bool:
    """A final PNG name: temp files (".x", "*.tmp", "*.part", "*~") never show."""
    return name.endswith(".png") and not name.startswith(".") and not name.endswith(TEMP_SUFFIXES)


def temporary_name(name: str) -> str:
    """A hidden name to write `name` under (the gallery never shows it), unique so that two
    writers never share one."""
    return f".{name}.{secrets.token_hex(4)}.tmp"


def is_whole_png(path: Path) -> bool:
    """PNG signature at the start and the IEND chunk at the end: never show a half-written file.

    Two small reads, done only for images that enter the visible set.
    """
    try:
        with path.open("rb") as file:
            head = file.read(8)
            file.seek(-len(PNG_END), os.SEEK_END)
            return head == PNG_SIGNATURE and file.read() == PNG_END
    except OSError:
        return False


def load_entry(folder: Path, key: Key) -> Entry | None:
    """The image of `key` with its job's metadata; None while its PNG is not whole."""
    mtime_ns, name = key
    if not is_whole_png(folder / name):
        return None
    try:
        raw = (folder / f"{job_stem(name)}.json").read_bytes()
    except OSError:
        info = ImageInfo()
    else:
        info = parse_image_info(raw, image_index(name))
    return Entry(name, mtime_ns, info)


def folder_keys(folder: Path) -> Iterator[Key]:
    """The key of every final PNG in the folder, in no order: one `os.scandir` pass, no reads,
    yielded as it goes (so a caller keeping only the newest holds no list of all)."""
    with os.scandir(folder) as listing:
        for item in listing:
            if not is_candidate(item.name):
                continue
            try:
                info = item.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                yield info.st_mtime_ns, item.name


def key_of(path: Path) -> Key | None:
    """A final PNG's key, or None when it is gone or not a regular file."""
    try:
        info = path.lstat()
    except OSError:
        return None
    return (info.st_mtime_ns, path.name) if stat.S_ISREG(info.st_mode) else None


def landed_job(folder: Path, job_id: str) -> tuple[dict, list[str]] | None:
    """A job whose files are all in the folder: its sidecar's record and its file names, JSON
    first (as a `done` event lists them). None while any image is missing or not whole."""
    try:
        record = json.loads((folder / f"{job_id}.json").read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    count = record.get("number_of_images") if isinstance(record, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 100:
        return None
    pngs = [f"{job_id}-{index + 1}.png" for index in range(count)]
    if not all(is_whole_png(folder / name) for name in pngs):
        return None
    return record, [f"{job_id}.json", *pngs]
