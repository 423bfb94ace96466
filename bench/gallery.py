"""Gallery cost at 100, 10,000 and 100,000 PNG+JSON pairs: this index vs the old web UI's listing.

The old web UI, on every 2 s poll of every browser, listed all `*.png`, read every `<stem>.json`,
sorted by ctime and kept 24. This index scans once at startup (reading only the kept JSONs) and
then applies each watcher change on its own. Both run here, side by side, on the same folders.

    python bench/gallery.py [--sizes 100 10000 100000] [--keep DIR]
"""

import argparse
import json
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from watchfiles import Change

from sd_webui.gallery import GalleryIndex

GALLERY_SIZE = 24
NEW_FILES = 20


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x87\xce\xeb"))
        + chunk(b"IEND", b"")
    )


PNG = tiny_png()
SIDECAR = json.dumps(
    {"prompt": "green dog", "lcm_model_id": "stabilityai/sd-turbo", "image_width": 512,
     "image_height": 512, "image_seeds": [1]},
    indent=4,
).encode()  # fmt: skip


def write(path: Path, data: bytes, mtime_s: float) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.utime(path, (mtime_s, mtime_s))


def make_pair(folder: Path, number: int, mtime_s: float) -> Path:
    stem = f"{number:032x}"
    write(folder / f"{stem}.json", SIDECAR, mtime_s)
    png = folder / f"{stem}-1.png"
    write(png, PNG, mtime_s)
    return png


def fill(folder: Path, pairs: int) -> None:
    """`pairs` jobs of one image each, one second apart (created once, reused by both sides)."""
    folder.mkdir(parents=True, exist_ok=True)
    present = sum(1 for name in os.listdir(folder) if name.endswith(".png"))
    start = 1_600_000_000
    for number in range(present, pairs):
        make_pair(folder, number, start + number)


def old_listing(folder: Path) -> list[tuple[str, dict]]:
    """The old web UI's algorithm: list all, read every JSON, sort by ctime, slice 24."""
    images = []
    for name in os.listdir(folder):
        if not name.endswith(".png"):
            continue
        stem = name.rpartition("-")[0]
        with open(folder / f"{stem}.json", "rb") as file:
            metadata = json.load(file)
        images.append((os.stat(folder / name).st_ctime, name, metadata))
    images.sort(key=lambda image: image[0], reverse=True)
    return [(name, metadata) for _, name, metadata in images[:GALLERY_SIZE]]


def timed(action: Callable[[], object], repeat: int) -> float:
    """Best of `repeat` runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


def measure(folder: Path, pairs: int) -> dict[str, float]:
    repeat = 5 if pairs <= 10_000 else 2
    index = GalleryIndex(folder, GALLERY_SIZE)
    startup = timed(lambda: GalleryIndex(folder, GALLERY_SIZE).scan(), repeat)
    index.scan()
    old = timed(lambda: old_listing(folder), repeat)
    costs = []
    stems = [f"{10**9 + pairs * 100 + step:032x}" for step in range(NEW_FILES)]
    try:
        for step, stem in enumerate(stems):
            png = folder / f"{stem}-1.png"
            make_pair(folder, int(stem, 16), time.time() + 10**6 + step)
            changes = {(Change.added, str(png)), (Change.added, str(folder / f"{stem}.json"))}
            started = time.perf_counter()
            changed = index.apply(changes)
            costs.append(time.perf_counter() - started)
            assert changed and index.entries()[0].name == png.name
        # Both see the new files as the newest (compared as sets: ctime ticks are coarse, so
        # the old algorithm orders files written in the same tick arbitrarily).
        old_newest = {name for name, _ in old_listing(folder)[:NEW_FILES]}
        assert old_newest == {entry.name for entry in index.entries()[:NEW_FILES]}
    finally:  # leave the folder as it was, for the next run
        for stem in stems:
            (folder / f"{stem}-1.png").unlink(missing_ok=True)
            (folder / f"{stem}.json").unlink(missing_ok=True)
    update = sorted(costs)[len(costs) // 2]
    return {"startup": startup, "update": update, "old": old, "kept": len(index._ranked)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000, 100_000])
    parser.add_argument("--keep", type=Path, help="reuse (or create) the folders under DIR")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="gallery-bench-"))
    print(f"folders under {base}; gallery size {GALLERY_SIZE}; update = median of {NEW_FILES}")
    print(
        f"{'pairs':>8} | {'startup scan':>12} | {'new file: index':>15} | "
        f"{'new file: old listing':>21} | {'old / index':>11} | {'keys held':>9}"
    )
    try:
        for pairs in args.sizes:
            run(base / f"pairs-{pairs}", pairs)
    finally:
        if args.keep is None:
            shutil.rmtree(base)


def run(folder: Path, pairs: int) -> None:
    """One table row: make the folder (once), then measure both sides on it."""
    started = time.perf_counter()
    fill(folder, pairs)
    created = time.perf_counter() - started
    result = measure(folder, pairs)
    startup, update, old = result["startup"], result["update"], result["old"]
    print(
        f"{pairs:>8} | {startup * 1e3:>9.1f} ms | {update * 1e6:>12.0f} us | "
        f"{old * 1e3:>18.1f} ms | {old / update:>10.0f}x | "
        f"{result['kept']:>9.0f}   (files made in {created:.1f} s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
