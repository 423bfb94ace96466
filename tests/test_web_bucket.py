"""The web app with S3_BUCKET, as a web pod runs it, against a real S3 server that is down at
its start, comes up, and goes away again: `/readyz` waits for the first copy from the bucket
and then stays ready, and `/status` says at each moment whether the bucket answers."""

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sd_webui.bucket import Bucket
from sd_webui.jobs import Job
from sd_webui.settings import Settings
from tests.app_process import web_app
from tests.conftest import write_finished_job
from tests.s3_server import S3Server
from tests.worker.worker_support import http_get

BUCKET = "web-pod-images"
WITHIN_S = 30  # S3_MIRROR_INTERVAL_S is 1 s here; a failed comparison waits out boto3's retries


def status(url: str) -> dict:
    code, body = http_get(f"{url}/status")
    assert code == 200
    return json.loads(body)


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WITHIN_S
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {WITHIN_S} s"
        time.sleep(0.5)


@pytest.fixture
def server() -> Iterator[S3Server]:
    """This test's own S3 server, not started: the test stops and starts it."""
    server = S3Server()
    yield server
    server.stop()


def test_ready_after_the_first_copy_then_status_follows_the_bucket(
    server: S3Server, amqp_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "web-images"
    environment = {key.upper(): value for key, value in server.settings(BUCKET).items()}
    environment |= {
        "AMQP_URL": amqp_url,
        "IMAGES_DIR": str(folder),
        "S3_MIRROR_INTERVAL_S": "1",
    }
    with web_app(tmp_path / "web.log", backend_only=True, ready="/healthz", **environment) as url:
        # The bucket is down: alive, not ready, and /status says why.
        code, why = http_get(f"{url}/readyz")
        assert code == 503 and "the first copy from the bucket is not done" in why
        wait_until(lambda: status(url)["bucket_error"], "bucket error in /status")
        seen = status(url)
        assert seen["bucket_reachable"] is False and seen["bucket_compared_at"] is None

        # It comes up holding one job: the first comparison copies it, dated as its worker did.
        server.start()
        bucket = Bucket(Settings(amqp_url=amqp_url, images_dir=folder, **server.settings(BUCKET)))
        bucket.client.create_bucket(Bucket=BUCKET)
        staging = tmp_path / "worker"
        staging.mkdir()
        job = Job(prompt="a lighthouse", count=1)
        write_finished_job(staging, job)
        files = [staging / f"{job.id}.json", staging / f"{job.id}-1.png"]
        written_ns = time.time_ns() - 3600 * 1_000_000_000
        for path in files:
            os.utime(path, ns=(written_ns, written_ns))
        bucket.upload_job(files)
        wait_until(lambda: http_get(f"{url}/readyz")[0] == 200, "readiness")
        assert (folder / files[1].name).stat().st_mtime_ns == written_ns
        seen = status(url)
        assert seen["bucket_reachable"] is True and seen["bucket_error"] is None
        assert seen["bucket_compared_at"]

        # It goes away: still ready (the copy serves the page), and /status says so.
        server.stop()
        wait_until(lambda: status(url)["bucket_reachable"] is False, "bucket gone in /status")
        assert http_get(f"{url}/readyz")[0] == 200
        assert "Could not connect" in status(url)["bucket_error"]
        assert (folder / files[1].name).exists()
