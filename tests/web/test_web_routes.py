"""The backend routes without a browser: which names are served, health and readiness."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from sd_webui import gallery, publishing
from sd_webui.queue_stats import get_queue_stats
from sd_webui.sd_webui import backend, servable
from sd_webui.settings import get_settings
from tests.conftest import free_port


@pytest.fixture
def folder(images_dir: Path) -> Path:
    (images_dir / "job-1.png").write_bytes(b"png")
    (images_dir / "job.json").write_text("{}")
    return images_dir.resolve()


@pytest.mark.parametrize("name", ["job-1.png", "job.json"])
def test_files_directly_in_the_folder_are_served(folder: Path, name: str) -> None:
    assert servable(folder, name) == folder / name


def test_names_that_escape_or_are_not_images_are_refused(folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"secret")
    (folder / "link-1.png").symlink_to(outside)
    (folder / "inner-1.png").symlink_to(folder / "job-1.png")
    (folder / "sub").mkdir()
    (folder / "sub" / "x-1.png").write_bytes(b"png")
    (folder / "notes.txt").write_text("hi")
    (folder / "job-2.png.tmp").write_bytes(b"half")
    for name in (
        "../secret.png",
        "..",
        str(outside),
        "/etc/passwd",
        "sub/x-1.png",
        "..\\secret.png",
        "link-1.png",
        "notes.txt",
        "job-2.png.tmp",
        ".job-1.png",
        "missing-1.png",
        "sub",
        "x.png\0.png",
        "a" * 5000 + ".png",
        "\u00e9" * 127 + ".png",  # 254 characters, 258 bytes in UTF-8
        "\udcff\udcfe.png",  # undecodable bytes, as surrogateescape gives them
        "\ud800-1.png",
    ):
        assert servable(folder, name) is None, name
    assert servable(folder, "inner-1.png") == folder / "job-1.png"


@pytest.fixture
def client(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The routes on a folder of their own, with a gallery not yet scanned."""
    monkeypatch.setenv("IMAGES_DIR", str(folder))
    monkeypatch.delenv("AMQP_URL", raising=False)
    get_settings.cache_clear()
    get_queue_stats.cache_clear()
    publishing.set_sink(None)
    monkeypatch.setattr(gallery, "_gallery", None)
    yield TestClient(backend)
    get_settings.cache_clear()
    get_queue_stats.cache_clear()
    publishing.set_sink(None)


async def test_ready_once_the_first_scan_is_done(client: TestClient) -> None:
    assert (client.get("/healthz").status_code, client.get("/healthz").text) == (200, "ok")
    response = client.get("/readyz")
    assert (response.status_code, response.text) == (
        503,
        "the first scan of the images folder is not done",
    )
    await gallery.get_gallery().scan()
    assert client.get("/readyz").status_code == 200


async def test_not_ready_when_the_folder_is_unreadable(
    client: TestClient, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await gallery.get_gallery().scan()
    monkeypatch.setenv("IMAGES_DIR", str(folder / "missing"))
    get_settings.cache_clear()
    assert client.get("/readyz").status_code == 503
    assert client.get("/status").json()["images_readable"] is False


async def test_ready_whatever_the_broker_says(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page can be served with the broker down: readiness says so, /status tells the
    broker's state (here a port nothing listens on, polled once as the lifespan's loop does)."""
    monkeypatch.setenv("AMQP_URL", f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    get_settings.cache_clear()
    await gallery.get_gallery().scan()
    stats = get_queue_stats()
    assert stats is not None
    await stats.refresh()
    assert client.get("/readyz").status_code == 200
    status = client.get("/status").json()
    assert status["broker_reachable"] is False
    assert (status["waiting"], status["workers"]) == (None, None)
    assert status["gallery_scanned"] is True
    assert "sd_web_broker_up 0.0" in client.get("/metrics").text


def test_download_is_an_attachment_and_images_cache_for_a_year(client: TestClient) -> None:
    inline = client.get("/images/job-1.png")
    assert inline.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert inline.headers["content-type"] == "image/png"
    download = client.get("/images/job-1.png?download=1")
    assert download.headers["content-disposition"].startswith("attachment")
    assert client.get("/images/nothing.png").status_code == 404
