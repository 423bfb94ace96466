"""The API with RabbitMQ and a separate `sd-worker`, on a private broker node that a test stops:
an open API, the pending limit, API_WAIT_S, a client that goes away, a broker that is down."""

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sd_webui.settings import Settings
from tests.app_process import web_app
from tests.rabbitmq_node import RabbitNode
from tests.worker.worker_support import WorkerProcess

LIMIT = 3
WAIT_S = 4


@pytest.fixture(scope="module")
def settings(rabbit_node: RabbitNode, demo_model: Path, tmp_path_factory) -> Settings:
    return Settings(
        amqp_url=rabbit_node.url,
        queue_name=f"test-api-{uuid.uuid4().hex[:8]}",
        images_dir=tmp_path_factory.mktemp("api-rabbit-images"),
        sd_model=str(demo_model),
    )


@pytest.fixture(scope="module")
def app_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("api-rabbit-app") / "web.log"


@pytest.fixture(scope="module")
def url(settings: Settings, app_log: Path) -> Iterator[str]:
    environment = {
        "AMQP_URL": settings.amqp_url or "",
        "QUEUE_NAME": settings.queue_name,
        "IMAGES_DIR": str(settings.images_dir),
        "SD_MODEL": settings.sd_model,
        "API_WAIT_S": str(WAIT_S),
        "MAX_PENDING_PER_SESSION": str(LIMIT),
    }
    with web_app(app_log, backend_only=True, **environment) as url:
        yield url


@pytest.fixture(scope="module")
def api(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def worker(settings: Settings, tmp_path_factory) -> Iterator[WorkerProcess]:
    """One worker, started by the first test that needs it."""
    process = WorkerProcess(settings, tmp_path_factory.mktemp("api-worker") / "worker.log")
    yield process
    process.kill()


def wait_until(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def state(api: httpx.Client, job_id: str) -> str:
    return api.get(f"/api/v1/jobs/{job_id}").json()["state"]


def image_with_prompt(api: httpx.Client, prompt: str) -> dict | None:
    images = api.get("/api/v1/images", params={"limit": 100}).json()["images"]
    return next((item for item in images if item["prompt"] == prompt), None)


def test_an_open_api_says_so_and_ignores_what_clients_send_as_auth(api: httpx.Client, app_log):
    assert "API: open to anyone who can reach it" in app_log.read_text()
    for junk in ("Basic", "Basic dW5kZWZpbmVk", "", "Bearer"):  # from empty client settings
        answer = api.get("/sdapi/v1/options", headers={"Authorization": junk})
        assert answer.status_code == 200


def test_504_after_api_wait_with_the_job_id(api: httpx.Client):
    started = time.monotonic()
    answer = api.post("/sdapi/v1/txt2img", json={"prompt": "a late ferry", "steps": 1})
    assert answer.status_code == 504
    assert WAIT_S <= time.monotonic() - started < WAIT_S + 5
    (job_id,) = answer.json()["job_ids"]
    assert job_id in answer.json()["detail"] and state(api, job_id) == "queued"
    pytest.job_504 = job_id  # type: ignore[attr-defined]


def test_past_the_pending_limit_is_429_and_nothing_is_published(api: httpx.Client):
    # One job from the test above still waits (no worker yet): two more reach the limit.
    body = {"prompt": "a queue of boats", "count": LIMIT - 1, "width": 256, "height": 256}
    assert api.post("/api/v1/jobs", json=body).status_code == 202
    refused = api.post("/api/v1/jobs", json={"prompt": "one boat too many"})
    assert refused.status_code == 429
    assert refused.json()["pending"] == LIMIT and refused.json()["limit"] == LIMIT
    assert wait_until(lambda: api.get("/api/v1/queue").json()["waiting"] == LIMIT, 10, "3 jobs")


def test_the_jobs_run_on_a_separate_worker_and_land(
    api: httpx.Client, worker: WorkerProcess, settings: Settings
):
    job_id = pytest.job_504  # type: ignore[attr-defined]
    wait_until(lambda: state(api, job_id) == "done", 120, "the job that timed out to be done")
    assert (settings.images_dir / f"{job_id}-1.png").is_file()
    assert wait_until(lambda: image_with_prompt(api, "a late ferry"), 10, "it in /images")
    queue = wait_until(lambda: api.get("/api/v1/queue").json(), 10, "the queue")
    assert queue["broker_reachable"] is True
    wait_until(lambda: api.get("/api/v1/queue").json()["workers"] == 1, 10, "one worker")
    wait_until(lambda: api.get("/api/v1/queue").json()["waiting"] == 0, 60, "an empty queue")


def test_a_client_that_goes_away_does_not_lose_its_job(url: str, api: httpx.Client):
    prompt = f"an abandoned kite {uuid.uuid4().hex[:6]}"
    with pytest.raises(httpx.ReadTimeout):  # it hangs up long before a 1024x1024 image is made
        httpx.post(
            f"{url}/sdapi/v1/txt2img",
            json={"prompt": prompt, "steps": 8, "width": 1024, "height": 1024},
            timeout=httpx.Timeout(10, read=0.3),
        )
    assert wait_until(lambda: image_with_prompt(api, prompt), 120, "the abandoned job's image")


def test_broker_down_is_503_and_nothing_is_published(
    api: httpx.Client, rabbit_node: RabbitNode, worker: WorkerProcess
):
    rabbit_node.stop_app()
    try:
        refused = api.post("/api/v1/jobs", json={"prompt": "a boat in a storm"})
        assert refused.status_code == 503
        assert "queue is unavailable" in refused.json()["detail"]
        a1111 = api.post("/sdapi/v1/txt2img", json={"prompt": "a boat in a storm"})
        assert a1111.status_code == 503
    finally:
        rabbit_node.start_app()

    def accepted() -> str | None:
        answer = api.post("/api/v1/jobs", json={"prompt": "after the storm", "steps": 1})
        return answer.json()["ids"][0] if answer.status_code == 202 else None

    job_id = wait_until(accepted, 60, "the API to publish again")
    wait_until(lambda: state(api, job_id) == "done", 120, "the job after the storm")
    assert image_with_prompt(api, "a boat in a storm") is None


def readme_examples() -> list[tuple[str, str]]:
    """The code blocks of the README's "HTTP API" section, as (language, code)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## HTTP API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.DOTALL)


def test_the_readme_examples_work(url: str, api: httpx.Client):
    examples = dict(readme_examples())
    assert set(examples) == {"bash", "python"}
    host = url.removeprefix("http://")
    curl = subprocess.run(
        ["bash", "-c", examples["bash"].replace("localhost:3000", host)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    ids = json.loads(curl.stdout)["ids"]
    assert len(ids) == 2
    for job_id in ids:
        wait_until(lambda job_id=job_id: state(api, job_id) == "done", 120, "the curl jobs")
    program = examples["python"].replace("localhost:3000", host)
    program += "\nprint(len(image.data[0].b64_json))\n"
    python = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=True
    )
    assert int(python.stdout) > 1000
