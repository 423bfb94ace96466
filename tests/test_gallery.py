"""The newest-N index: ordering, ties, bounds, deletion with refill, late JSON, ignored files."""

import asyncio
import json
import os
import tracemalloc
import zlib
from pathlib import Path

import pytest
from watchfiles import Change

from sd_webui.gallery import Gallery, GalleryIndex
from sd_webui.image_files import image_index, is_candidate, job_stem


def png_bytes() -> bytes:
    """A real 1x1 PNG, so the whole-file check sees a signature and an IEND chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    pixels = zlib.compress(b"\x00\x87\xce\xeb")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


PNG = png_bytes()


def put(folder: Path, name: str, mtime: int, data: bytes = PNG) -> Path:
    """A file with an exact mtime (seconds), so ordering never depends on the clock."""
    path = folder / name
    path.write_bytes(data)
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))
    return path


def sidecar(folder: Path, stem: str, prompt: str, seeds: list[int] | None = None) -> Path:
    data = {"prompt": prompt, "lcm_model_id": "m", "image_width": 512, "image_height": 512}
    if seeds is not None:
        data["image_seeds"] = seeds
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(data))
    return path


def names(index: GalleryIndex) -> list[str]:
    return [entry.name for entry in index.entries()]


def test_names() -> None:
    assert job_stem("abc-2.png") == "abc"
    assert job_stem("my-job-id-4.png") == "my-job-id"
    assert job_stem("plain.png") == "plain"
    assert image_index("abc-3.png") == 2
    assert image_index("abc-x.png") == image_index("abc.png") == image_index("abc-0.png") == 0
    for temp in (
        ".abc-1.png",
        "abc-1.png.tmp",
        "abc-1.png.part",
        "abc-1.png~",
        "abc.json",
        "a.jpg",
    ):
        assert not is_candidate(temp)
    assert is_candidate("abc-1.png")


def test_newest_first_bounded_with_ties_by_name(images_dir: Path) -> None:
    for n in range(10):
        put(images_dir, f"job{n}-1.png", 1000 + n)
    put(images_dir, "tie-a.png", 1009)
    put(images_dir, "tie-b.png", 1009)
    index = GalleryIndex(images_dir, size=4)
    index.scan()
    assert names(index) == ["tie-b.png", "tie-a.png", "job9-1.png", "job8-1.png"]


def test_metadata_is_read_only_for_visible_images(images_dir: Path) -> None:
    put(images_dir, "old-1.png", 1)
    (images_dir / "old.json").mkdir()  # reading it would fail: it must never be read
    put(images_dir, "new-1.png", 2)
    put(images_dir, "new-2.png", 3)
    sidecar(images_dir, "new", '"green dog"', seeds=[11, 22])
    index = GalleryIndex(images_dir, size=2)
    index.scan()
    first, second = index.entries()
    assert (first.name, first.info.prompt, first.info.seed) == ("new-2.png", "green dog", 22)
    assert (second.name, second.info.seed, second.job_id) == ("new-1.png", 11, "new")


def test_temp_non_png_subfolders_symlinks_and_partial_pngs_are_ignored(images_dir: Path) -> None:
    put(images_dir, "good-1.png", 1)
    for name in (".hidden-1.png", "a-1.png.tmp", "b-1.png.part", "c-1.png~", "d.txt", "e.jpg"):
        put(images_dir, name, 50)
    (images_dir / "sub").mkdir()
    put(images_dir / "sub", "nested-1.png", 50)
    (images_dir / "dir.png").mkdir()
    (images_dir / "link-1.png").symlink_to(images_dir / "good-1.png")
    put(images_dir, "half-1.png", 60, data=PNG[:20])
    put(images_dir, "empty-1.png", 61, data=b"")
    index = GalleryIndex(images_dir, size=24)
    index.scan()
    assert names(index) == ["good-1.png"]


def test_a_png_without_json_shows_unknown_then_gains_metadata(images_dir: Path) -> None:
    png = put(images_dir, "late-1.png", 5)
    index = GalleryIndex(images_dir, size=3)
    index.scan()
    assert index.entries()[0].info.prompt == "unknown"
    json_path = sidecar(images_dir, "late", "red fox", seeds=[3])
    assert index.apply({(Change.added, str(json_path))})
    (entry,) = index.entries()
    assert (entry.info.prompt, entry.info.seed, entry.info.size) == ("red fox", 3, "512x512")
    assert entry.name == png.name


def test_a_new_png_enters_only_if_newer_than_the_oldest_shown(images_dir: Path) -> None:
    for n in range(5):
        put(images_dir, f"j{n}-1.png", 100 + n)
    index = GalleryIndex(images_dir, size=3, reserve=2)
    index.scan()
    old = put(images_dir, "older-1.png", 1)
    assert not index.apply({(Change.added, str(old))})
    new = put(images_dir, "newest-1.png", 999)
    assert index.apply({(Change.added, str(new))})
    assert names(index) == ["newest-1.png", "j4-1.png", "j3-1.png"]


def test_deleting_a_shown_image_promotes_the_next_newest_without_a_rescan(
    images_dir: Path,
) -> None:
    for n in range(8):
        put(images_dir, f"j{n}-1.png", 100 + n)
    index = GalleryIndex(images_dir, size=3, reserve=2)
    index.scan()
    assert index.scans == 1
    (images_dir / "j7-1.png").unlink()
    assert index.apply({(Change.deleted, str(images_dir / "j7-1.png"))})
    assert names(index) == ["j6-1.png", "j5-1.png", "j4-1.png"]
    assert index.scans == 1


def test_rescan_only_when_the_reserve_runs_dry(images_dir: Path) -> None:
    for n in range(10):
        put(images_dir, f"j{n}-1.png", 100 + n)
    index = GalleryIndex(images_dir, size=3, reserve=2)
    index.scan()
    for n in (9, 8):
        (images_dir / f"j{n}-1.png").unlink()
        index.apply({(Change.deleted, str(images_dir / f"j{n}-1.png"))})
    assert index.scans == 1
    (images_dir / "j7-1.png").unlink()
    index.apply({(Change.deleted, str(images_dir / "j7-1.png"))})
    assert index.scans == 2
    assert names(index) == ["j6-1.png", "j5-1.png", "j4-1.png"]


def test_no_rescan_when_the_whole_folder_is_in_memory(images_dir: Path) -> None:
    for n in range(3):
        put(images_dir, f"j{n}-1.png", 100 + n)
    index = GalleryIndex(images_dir, size=2, reserve=2)
    index.scan()
    for n in (2, 1, 0):
        (images_dir / f"j{n}-1.png").unlink()
        index.apply({(Change.deleted, str(images_dir / f"j{n}-1.png"))})
    assert names(index) == []
    assert index.scans == 1


def test_a_modified_png_moves_up_and_a_half_written_one_waits(images_dir: Path) -> None:
    put(images_dir, "a-1.png", 1)
    put(images_dir, "b-1.png", 2)
    index = GalleryIndex(images_dir, size=5)
    index.scan()
    growing = put(images_dir, "c-1.png", 3, data=PNG[:30])
    assert not index.apply({(Change.added, str(growing))})
    put(images_dir, "c-1.png", 3)
    assert index.apply({(Change.modified, str(growing))})
    put(images_dir, "a-1.png", 9)
    index.apply({(Change.modified, str(images_dir / "a-1.png"))})
    assert names(index) == ["a-1.png", "c-1.png", "b-1.png"]


def test_memory_stays_bounded(images_dir: Path) -> None:
    index = GalleryIndex(images_dir, size=4, reserve=3)
    index.scan()
    for n in range(50):
        path = put(images_dir, f"j{n:02}-1.png", 100 + n)
        index.apply({(Change.added, str(path))})
    assert len(index._ranked) == len(index._keys) == 7
    assert len(index._entries) == 4
    assert names(index) == ["j49-1.png", "j48-1.png", "j47-1.png", "j46-1.png"]


def test_a_rescan_holds_only_the_newest_keys_while_it_reads(images_dir: Path) -> None:
    """A rescan of its own (deletions drained the reserve) goes through a bounded heap: its
    memory peak does not grow with the folder, where a list of every key would (~3 MB here)."""
    for n in range(20_000):
        (images_dir / f"{n:032x}-1.png").touch()
        os.utime(images_dir / f"{n:032x}-1.png", ns=(0, 1_000_000_000 * n))
    index = GalleryIndex(images_dir, size=24)
    tracemalloc.start()
    try:
        index._rank_folder()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [name for _, name in index._ranked[-2:]] == [
        f"{19_998:032x}-1.png",
        f"{19_999:032x}-1.png",
    ]
    assert index._beyond and len(index._ranked) == 48
    assert peak < 200_000, f"{peak} bytes at the peak"


def test_changes_outside_the_folder_are_ignored(images_dir: Path) -> None:
    index = GalleryIndex(images_dir, size=4)
    index.scan()
    (images_dir / "sub").mkdir()
    nested = put(images_dir / "sub", "x-1.png", 5)
    assert not index.apply({(Change.added, str(nested)), (Change.added, "/elsewhere/y-1.png")})


async def test_the_watcher_pushes_changes_to_waiting_sessions(images_dir: Path) -> None:
    gallery = Gallery(images_dir, size=4)
    watcher = asyncio.create_task(gallery.watch())
    try:
        async with asyncio.timeout(10):
            await gallery.wait_for_change(0)  # the first scan
        seen = gallery.version
        waiting = asyncio.create_task(gallery.wait_for_change(seen))
        await asyncio.sleep(0.3)
        assert gallery.listeners == 1
        put(images_dir, "fresh-1.png", 10**9)
        async with asyncio.timeout(5):
            await waiting
        assert [entry.name for entry in gallery.snapshot] == ["fresh-1.png"]
        assert gallery.listeners == 0
    finally:
        watcher.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watcher
