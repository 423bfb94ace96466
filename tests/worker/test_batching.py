"""BATCH_JOBS > 1: the grouping rules alone, then the worker on the real broker and demo model."""

import logging
import uuid
from pathlib import Path

import numpy as np
import pytest
from events_support import EventLog
from PIL import Image
from prometheus_client import REGISTRY
from worker_support import consumer_for, drain, job_files, publish, ready_count, running, wait_for

from sd_webui.jobs import Job
from sd_webui.settings import Settings
from sd_webui.worker.batching import batch_key, batches
from sd_webui.worker.consumer import ATTEMPT_HEADER, ERROR_HEADER, MAX_ATTEMPTS
from sd_webui.worker.pipeline import LoadedModel
from sd_webui.worker.runner import JobRunner


def job(**fields: object) -> Job:
    return Job.model_validate({"prompt": "green dog", "width": 256, "height": 256, **fields})


def test_batch_key_ignores_what_one_call_can_vary() -> None:
    base = job(prompt="a", negative_prompt="", count=1, seed=1)
    assert batch_key(base) == batch_key(job(prompt="b", negative_prompt="blurry", count=4))
    for different in ({"width": 320}, {"height": 320}, {"steps": 2}, {"guidance_scale": 1.5}):
        assert batch_key(base) != batch_key(job(**different))
    assert batch_key(job(guidance_scale=1)) == batch_key(job(guidance_scale=1.0))


def test_batches_group_compatible_items_in_arrival_order() -> None:
    items = [("a", 1), ("b", 2), ("c", 1), ("d", 3), ("e", 2), ("f", 1)]
    groups = batches(items, key=lambda item: item[1], limit=16)
    assert groups == [[("a", 1), ("c", 1), ("f", 1)], [("b", 2), ("e", 2)], [("d", 3)]]


def test_batches_cap_each_group_at_the_limit() -> None:
    items = list(range(7))
    assert batches(items, key=lambda item: item % 2, limit=2) == [[0, 2], [1, 3], [4, 6], [5]]
    assert batches(items, key=lambda item: 0, limit=1) == [[item] for item in items]
    assert batches([], key=lambda item: 0, limit=3) == []


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def calls_by_size() -> dict[int, float]:
    """sd_worker_pipeline_calls_total by the number of jobs in each call."""
    return {
        size: REGISTRY.get_sample_value("sd_worker_pipeline_calls_total", {"jobs": str(size)})
        or 0.0
        for size in range(1, 17)
    }


def jobs_total(outcome: str) -> float:
    return REGISTRY.get_sample_value("sd_worker_jobs_total", {"outcome": outcome}) or 0.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The worker's settings with events, taking up to three compatible jobs per call."""
    return settings.model_copy(update={"batch_jobs": 3})


async def publish_jobs(settings: Settings, *recipes: dict[str, object]) -> list[str]:
    ids = []
    for recipe in recipes:
        job_id = uuid.uuid4().hex
        body = {"prompt": "green dog", "width": 256, "height": 256, **recipe, "id": job_id}
        await publish(settings.amqp_url, settings.queue_name, body, message_id=job_id)
        ids.append(job_id)
    return ids


@pytest.mark.broker
async def test_waiting_jobs_share_pipeline_calls_and_each_is_acknowledged(
    settings: Settings,
    events: EventLog,
    loaded_model: LoadedModel,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """5 jobs waiting, BATCH_JOBS=3: the compatible first ones run in one call; every job gets
    its files and events, and its seeded pixels are those of the same job run alone."""
    caplog.set_level(logging.INFO, logger="sd_webui.worker.consumer")
    folder = settings.images_dir
    seeded = {"steps": 2, "guidance_scale": 1.5}
    recipes = [
        {**seeded, "prompt": "a red cat", "negative_prompt": "blurry", "count": 2, "seed": 1234},
        {"width": 320},
        {**seeded, "prompt": "a blue fish", "seed": 99},
        {"count": 2},
        {"width": 320, "height": 320},
    ]
    ids = await publish_jobs(settings, *recipes)
    before = calls_by_size()
    async with running(consumer_for(settings, loaded_model)):
        for job_id in ids:
            await events.until_final(job_id, 120)

    for job_id, recipe in zip(ids, recipes, strict=True):
        count = int(recipe.get("count", 1))
        names = [f"{job_id}-{index}.png" for index in range(1, count + 1)]
        assert job_files(folder, job_id) == sorted([*names, f"{job_id}.json"])
        width, height = int(recipe.get("width", 256)), int(recipe.get("height", 256))
        assert Image.open(folder / names[0]).size == (width, height)
        states = [event.state for event in events.of(job_id)]
        assert states == ["started"] + ["progress"] * int(recipe.get("steps", 1)) + ["done"]
    assert await ready_count(settings.amqp_url, settings.queue_name) == 0
    assert await drain(settings.amqp_url, settings.dead_letter_queue) == []

    # The two seeded jobs (same size, steps, guidance) were waiting together: one call.
    batch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch of")]
    assert any(ids[0] in line and ids[2] in line for line in batch_lines), batch_lines
    added = {size: calls - before[size] for size, calls in calls_by_size().items()}
    assert sum(size * calls for size, calls in added.items()) == len(ids)
    assert sum(added.values()) < len(ids)

    alone = tmp_path / "alone"
    runner = JobRunner(loaded_model, alone)
    for job_id, recipe in ((ids[0], recipes[0]), (ids[2], recipes[2])):
        result = runner.run(job(**recipe))
        for batched, single in zip(
            sorted(folder.glob(f"{job_id}-*.png")), result.files[1:], strict=True
        ):
            # Up to the rounding of a batched convolution, as for a count-2 job's images.
            assert np.abs(pixels(batched) - pixels(single)).max() <= 2


@pytest.mark.broker
async def test_a_failing_job_does_not_fail_the_others_of_its_batch(
    settings: Settings, loaded_model: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    """The middle job cannot be written (a folder holds its JSON name): the batch runs its jobs
    alone, the other two complete, the bad one is retried then dead-lettered."""
    caplog.set_level(logging.INFO, logger="sd_webui.worker.consumer")
    folder = settings.images_dir
    first, bad, last = await publish_jobs(settings, {"seed": 1}, {"seed": 2}, {"seed": 3})
    (folder / f"{bad}.json").mkdir()
    failures = jobs_total("failed")
    async with running(consumer_for(settings, loaded_model)):
        await wait_for(lambda: jobs_total("failed") == failures + 1, 120, "the bad job's end")

    assert any(r.getMessage().startswith("batch failed") for r in caplog.records)
    for job_id in (first, last):
        assert job_files(folder, job_id) == [f"{job_id}-1.png", f"{job_id}.json"]
    assert not (folder / f"{bad}-1.png").exists()
    (dead,) = await drain(settings.amqp_url, settings.dead_letter_queue)
    assert dead.message_id == bad and dead.headers[ATTEMPT_HEADER] == MAX_ATTEMPTS
    assert "IsADirectoryError" in dead.headers[ERROR_HEADER]
    assert await ready_count(settings.amqp_url, settings.queue_name) == 0
