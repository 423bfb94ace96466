"""`python -m sd_webui.worker` as a process: start-up failures, kill -9, SIGTERM, one-task mode."""

import asyncio
import json
import os
import re
import signal
import uuid
from pathlib import Path

import pytest
from PIL import Image
from worker_support import (
    WorkerProcess,
    drain,
    job_files,
    publish,
    publish_bare,
    ready_count,
    wait_for,
)

from sd_webui.settings import Settings
from sd_webui.worker.consumer import ATTEMPT_HEADER

# Long enough (several seconds on two cores) to be caught in the middle by a signal.
SLOW_JOB = {
    "prompt": "a slow green dog",
    "count": 2,
    "seed": 7,
    "width": 512,
    "height": 512,
    "steps": 3,
}
NEXT_JOB = {"prompt": "the next one", "width": 256, "height": 256}


@pytest.mark.parametrize(
    ("sd_model", "says", "before_torch"),
    [
        # Found out from the path or the local cache alone, before torch is even imported.
        ("/nonexistent/sd-turbo", "no such folder", True),
        ("stabilityai/sd-turbo", "not in the local model cache and HF_HUB_OFFLINE=1", True),
        ("{tmp}", "without model_index.json", True),
        # Found out by from_pretrained, after importing torch and diffusers.
        ("{tmp}/broken", "could not be loaded", False),
    ],
)
async def test_unloadable_model_exits_fast_with_one_clear_line(
    sd_model: str, says: str, before_torch: bool, tmp_path: Path
) -> None:
    """Fast means no hub retries and, where the path or the cache tell, no torch import (the
    log of imports, PYTHONPROFILEIMPORTTIME, shows which modules were loaded)."""
    broken = tmp_path / "broken"
    (broken / "unet").mkdir(parents=True)
    (broken / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "unet": ["diffusers", "UNet2DConditionModel"],
            }
        )
    )
    settings = Settings(
        amqp_url="amqp://guest:guest@127.0.0.1:1/", sd_model=sd_model.format(tmp=tmp_path)
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log", PYTHONPROFILEIMPORTTIME="1")
    assert await worker.wait(120) == 1
    imports = [line for line in worker.log.splitlines() if line.startswith("import time:")]
    said = [line for line in worker.log.splitlines() if not line.startswith("import time:")]
    assert ("torch" not in {line.rpartition("|")[2].strip() for line in imports}) == before_torch
    assert not [line for line in said if "retry" in line.lower()], said
    errors = [line for line in said if " ERROR " in line]
    assert len(errors) == 1, said
    assert f"SD_MODEL={settings.sd_model}" in errors[0] and says in errors[0]
    assert "set SD_MODEL to a local diffusers folder" in errors[0]
    assert "Traceback" not in worker.log


async def _publish_slow_and_next(settings: Settings) -> tuple[str, str]:
    slow, following = uuid.uuid4().hex, uuid.uuid4().hex
    url, queue = settings.amqp_url, settings.queue_name
    await publish(url, queue, {**SLOW_JOB, "id": slow}, message_id=slow)
    await publish(url, queue, {**NEXT_JOB, "id": following}, message_id=following)
    return slow, following


async def _wait_until_mid_job(settings: Settings, worker: WorkerProcess, job_id: str) -> None:
    """The worker holds the slow job (only the next one still waits) and has written nothing."""

    async def holding() -> bool:
        assert worker.process.poll() is None, worker.log
        return await ready_count(settings.amqp_url, settings.queue_name) == 1

    await wait_for(holding, 90, "the worker to take the slow job")
    assert job_files(settings.images_dir, job_id) == []


def _assert_whole_job(folder: Path, job_id: str, count: int) -> None:
    pngs = [f"{job_id}-{index}.png" for index in range(1, count + 1)]
    assert job_files(folder, job_id) == [*pngs, f"{job_id}.json"]
    record = json.loads((folder / f"{job_id}.json").read_text())
    assert record["number_of_images"] == count
    assert record["image_seeds"] == list(range(record["seed"], record["seed"] + count))
    for name in pngs:
        with Image.open(folder / name) as image:
            image.load()  # raises on a truncated file


async def test_kill_9_mid_job_then_a_new_worker_does_it_exactly_once(
    worker_settings: Settings, tmp_path: Path
) -> None:
    """Nothing is acknowledged before the files exist: the killed job comes back, and the next
    worker counts the death as its first attempt (queued again, behind the next job, as attempt
    2) before it does the job, once."""
    slow, following = await _publish_slow_and_next(worker_settings)
    first = WorkerProcess(worker_settings, tmp_path / "first.log")
    try:
        await _wait_until_mid_job(worker_settings, first, slow)
    finally:
        first.kill()
    assert first.process.returncode == -signal.SIGKILL
    assert job_files(worker_settings.images_dir, slow) == []

    second = WorkerProcess(worker_settings, tmp_path / "second.log")
    try:
        await wait_for(
            lambda: second.log.count("outcome=done") == 2, 180, "the second worker's two jobs"
        )
    finally:
        second.process.send_signal(signal.SIGTERM)
        assert await second.wait(60) == 0, second.log

    _assert_whole_job(worker_settings.images_dir, slow, count=2)
    assert _job_files_in(worker_settings.images_dir) == {slow, following}
    lines = [line for line in second.log.splitlines() if "outcome=" in line]
    assert [line.split("outcome=")[1].split()[0] for line in lines] == ["retry", "done", "done"]
    assert f"job {slow} " in lines[0] and "worker died while running it" in lines[0]
    assert f"job {following} " in lines[1]
    assert f"job {slow} count=2 size=512x512 steps=3" in lines[2]
    assert await ready_count(worker_settings.amqp_url, worker_settings.queue_name) == 0
    assert await drain(worker_settings.amqp_url, worker_settings.dead_letter_queue) == []


def _job_files_in(folder: Path) -> set[str]:
    return {name.split("-")[0].removesuffix(".json") for name in os.listdir(folder)}


async def test_a_message_without_any_id_is_redone_under_one_id_after_kill_9(
    worker_settings: Settings, tmp_path: Path
) -> None:
    """A bare body with no `id` and no `message_id` is queued again with an id before it runs
    (contract 2: a redelivery rewrites the same names), so a crash mid-job leaves one job."""
    url, queue = worker_settings.amqp_url, worker_settings.queue_name
    folder = worker_settings.images_dir
    await asyncio.to_thread(publish_bare, url, queue, SLOW_JOB)
    first = WorkerProcess(worker_settings, tmp_path / "first.log")
    stamped = re.compile(r"queued again as job ([0-9a-f]{32})")

    async def holding_the_stamped_copy() -> bool:
        assert first.process.poll() is None, first.log
        return bool(stamped.search(first.log)) and await ready_count(url, queue) == 0

    try:
        await wait_for(holding_the_stamped_copy, 90, "the worker to stamp and take the job")
        job_id = stamped.search(first.log)[1]
        assert job_files(folder, job_id) == []
    finally:
        first.kill()

    second = WorkerProcess(worker_settings, tmp_path / "second.log", EXIT_AFTER_ONE_TASK="1")
    assert await second.wait(120) == 0, second.log
    _assert_whole_job(folder, job_id, count=2)
    assert sorted(path.name for path in folder.iterdir()) == job_files(folder, job_id)
    assert "queued again" not in second.log  # the redelivered copy kept its id
    assert await ready_count(url, queue) == 0


async def test_sigterm_mid_job_finishes_it_and_exits_0(
    worker_settings: Settings, tmp_path: Path
) -> None:
    slow, following = await _publish_slow_and_next(worker_settings)
    worker = WorkerProcess(worker_settings, tmp_path / "worker.log")
    await _wait_until_mid_job(worker_settings, worker, slow)
    worker.process.send_signal(signal.SIGTERM)
    assert await worker.wait(90) == 0, worker.log

    _assert_whole_job(worker_settings.images_dir, slow, count=2)
    assert job_files(worker_settings.images_dir, following) == []
    assert await ready_count(worker_settings.amqp_url, worker_settings.queue_name) == 1
    assert "stopping: no new jobs" in worker.log


async def test_sigterm_past_the_grace_period_returns_the_job_to_the_queue(
    worker_settings: Settings, tmp_path: Path
) -> None:
    slow, _ = await _publish_slow_and_next(worker_settings)
    worker = WorkerProcess(worker_settings, tmp_path / "worker.log", SHUTDOWN_GRACE_S="0.2")
    await _wait_until_mid_job(worker_settings, worker, slow)
    worker.process.send_signal(signal.SIGTERM)
    assert await worker.wait(30) == 1, worker.log

    assert "SHUTDOWN_GRACE_S ran out" in worker.log
    assert [
        path.name for path in worker_settings.images_dir.iterdir() if not path.name.startswith(".")
    ] == []
    back = await drain(worker_settings.amqp_url, worker_settings.queue_name)
    assert len(back) == 2
    [copy] = [message for message in back if json.loads(message.body)["id"] == slow]
    # Given back as a copy: a stop is not a death, so the next worker does not count it.
    assert not copy.redelivered
    assert ATTEMPT_HEADER not in (copy.headers or {})
