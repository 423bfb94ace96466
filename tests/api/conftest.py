"""One web app for the API tests: the backend alone (`reflex run --env prod --backend-only`), on
the embedded queue and worker with the tiny demo model, keys required."""

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app_process import web_app

USER, PASSWORD = "alice", "s3cret"  # the key "alice:s3cret", as Basic auth
TOKEN = "token-for-sdk"  # a plain Bearer key
MODEL_READY_S = 120


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="session")
def api_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-images")


@pytest.fixture(scope="session")
def api_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-app") / "web.log"


@pytest.fixture(scope="session")
def api_url(demo_model: Path, api_images: Path, api_log: Path) -> Iterator[str]:
    """The app's URL once its embedded worker has loaded the model (one worker in /queue)."""
    keys = f"{USER}:{PASSWORD},{TOKEN}"
    environment = {"SD_MODEL": str(demo_model), "IMAGES_DIR": str(api_images), "API_KEYS": keys}
    with web_app(api_log, backend_only=True, **environment) as url:
        deadline = time.monotonic() + MODEL_READY_S
        headers = {"Authorization": f"Bearer {TOKEN}"}
        while httpx.get(f"{url}/api/v1/queue", headers=headers).json()["workers"] != 1:
            assert time.monotonic() < deadline, api_log.read_text()[-3000:]
            time.sleep(0.5)
        yield url


@pytest.fixture
def api(api_url: str) -> Iterator[httpx.Client]:
    """httpx at the app, with the Bearer key."""
    with httpx.Client(
        base_url=api_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120
    ) as client:
        yield client
