"""The catalog: every image of the folder, newest first, in pages that a cursor continues."""

from pathlib import Path

import pytest
from watchfiles import Change

from sd_webui.catalog import BadCursor, ImageCatalog, decode_cursor, encode_cursor
from tests.test_gallery import put


def every_page(catalog: ImageCatalog, limit: int) -> list[str]:
    names, cursor = [], None
    while True:
        keys, cursor = catalog.page(limit, cursor)
        names += [name for _, name in keys]
        if cursor is None:
            return names


def test_pages_cover_the_folder_newest_first(tmp_path: Path):
    for index in range(25):
        put(tmp_path, f"job{index:02}-1.png", 1000 + index)
    put(tmp_path, ".hidden-1.png", 5000)
    put(tmp_path, "temp-1.png.tmp", 5000)
    catalog = ImageCatalog(tmp_path)
    catalog.scan()
    assert len(catalog) == 25
    assert every_page(catalog, 7) == [f"job{index:02}-1.png" for index in range(24, -1, -1)]
    assert catalog.page(100) == (catalog.page(100)[0], None)


def test_changes_between_pages_neither_repeat_nor_skip(tmp_path: Path):
    for index in range(10):
        put(tmp_path, f"old{index}-1.png", 1000 + index)
    catalog = ImageCatalog(tmp_path)
    catalog.scan()
    first, cursor = catalog.page(4)
    new = put(tmp_path, "new-1.png", 9000)
    gone = tmp_path / "old0-1.png"
    gone.unlink()
    assert catalog.apply({(Change.added, str(new)), (Change.deleted, str(gone))}) == ["new-1.png"]
    rest = []
    while cursor is not None:
        keys, cursor = catalog.page(4, cursor)
        rest += keys
    names = [name for _, name in first + rest]
    assert names == [f"old{index}-1.png" for index in range(9, 0, -1)]
    assert catalog.page(1)[0][0][1] == "new-1.png"


def test_a_rewritten_image_moves_to_the_top_once(tmp_path: Path):
    path = put(tmp_path, "again-1.png", 1000)
    put(tmp_path, "other-1.png", 2000)
    catalog = ImageCatalog(tmp_path)
    catalog.scan()
    put(tmp_path, path.name, 3000)  # written again, later
    catalog.apply({(Change.modified, str(path))})
    assert every_page(catalog, 1) == ["again-1.png", "other-1.png"]


def test_cursors_round_trip_and_strangers_are_refused():
    key = (1_700_000_000_123_456_789, "name with / and ünïcode-1.png")
    assert decode_cursor(encode_cursor(key)) == key
    for bad in ("", "!!!", "bm90LWEtY3Vyc29y", encode_cursor((1, "x"))[:-3] + "@@"):
        with pytest.raises(BadCursor):
            decode_cursor(bad)
