"""MAX_JOB_UNITS as the Kubernetes manifests set it (32), through the API: a job too large for
the server is a bad request that says why, and nothing is queued."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import webuiapi

from tests.app_process import web_app


@pytest.fixture(scope="module")
def capped_url(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An open API (no keys) on the embedded queue, capped at 32 units."""
    folder = tmp_path_factory.mktemp("capped")
    environment = {"SD_MODEL": str(demo_model), "IMAGES_DIR": str(folder), "MAX_JOB_UNITS": "32"}
    with web_app(folder / "web.log", backend_only=True, **environment) as url:
        yield url


def waiting(url: str) -> int:
    return httpx.get(f"{url}/api/v1/queue").json()["waiting"]


def test_webuiapi_gets_a_422_naming_the_cap(capped_url: str) -> None:
    """One 1024x1024 image at 6 steps is 36 units. (A batch is a job per image, each measured
    alone; OpenAI's requests, at 1 step, never pass 16 units.)"""
    client = webuiapi.WebUIApi(baseurl=f"{capped_url}/sdapi/v1")
    with pytest.raises(RuntimeError, match="422") as refused:
        client.txt2img(prompt="a fox", width=1024, height=1024, steps=6)
    assert "too large for this server" in str(refused.value)
    assert "1 image of 1024x1024 at 6 steps is 36 units" in str(refused.value)
    assert "MAX_JOB_UNITS is 32" in str(refused.value)
    assert waiting(capped_url) == 0


def test_the_jobs_api_refuses_it_and_takes_a_smaller_one(capped_url: str) -> None:
    too_large = {"prompt": "a comet", "count": 4, "in_parallel": False, "steps": 5}
    answer = httpx.post(f"{capped_url}/api/v1/jobs", json={**too_large, "width": 576})
    assert answer.status_code == 422
    assert "Ask for fewer images or steps, or a smaller size" in answer.text
    assert waiting(capped_url) == 0
    fits = {**too_large, "width": 512}  # exactly 32 units
    assert httpx.post(f"{capped_url}/api/v1/jobs", json=fits).status_code == 202
