"""The job registry web replicas share through Redis, against a real Redis (the shared one, and
one of the test's own that it stops and starts again)."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sd_webui import shared_registry
from sd_webui.events import JobEvent, JobRegistry
from sd_webui.shared_registry import INDEX_KEY, KEY_PREFIX, SharedRegistry
from tests.redis_server import RedisServer
from tests.worker.worker_support import wait_for


def job_id() -> str:
    return uuid.uuid4().hex


@contextlib.asynccontextmanager
async def writing(registry: SharedRegistry) -> AsyncIterator[SharedRegistry]:
    task = asyncio.create_task(registry.run())
    try:
        yield registry
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await registry.close()


async def written(registry: SharedRegistry, key: str, state: str) -> None:
    async def in_redis() -> bool:
        return await registry.client.hget(key, "state") == state.encode()

    await wait_for(in_redis, 10, f"{key} to be {state} in Redis")


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[tuple[SharedRegistry, SharedRegistry]]:
    """Two replicas' registries over the same Redis, writing."""
    async with (
        writing(SharedRegistry(redis_url, JobRegistry())) as a,
        writing(SharedRegistry(redis_url, JobRegistry())) as b,
    ):
        yield a, b


async def test_a_job_queued_on_one_replica_is_known_to_the_other(replicas) -> None:
    a, b = replicas
    job = job_id()
    queued = JobEvent(id=job, state="queued")
    a.local.record(queued)
    a(queued)
    await written(a, KEY_PREFIX + job, "queued")
    assert b.local.latest(job) is None
    await b.recall([job, job_id()])  # one unknown to both: nothing happens for it
    assert b.local.latest(job) == queued
    assert len(b.local) == 1
    assert 0 < await b.client.ttl(KEY_PREFIX + job) <= shared_registry.SHARED_TTL_S


async def test_redis_keeps_the_registry_rules(replicas) -> None:
    a, b = replicas
    job = job_id()
    started = JobEvent(id=job, state="started", worker="gpu-7:42", attempt=1)
    for event in (
        started,
        JobEvent(id=job, state="progress", step=1, steps=4),
        JobEvent(id=job, state="queued"),  # late: must not hide the worker's events
    ):
        a(event)
    await asyncio.sleep(0.3)
    await b.recall([job])
    shown = b.local.latest(job)
    assert (shown.state, shown.step, shown.worker) == ("progress", 1, "gpu-7:42")

    a(JobEvent(id=job, state="done", files=[f"{job}.json", f"{job}-1.png"]))
    await written(a, KEY_PREFIX + job, "done")
    b(JobEvent(id=job, state="progress", step=2, steps=4))  # a late duplicate via B
    await asyncio.sleep(0.3)
    await b.recall([job])
    assert b.local.latest(job).state == "done"  # a final event sticks


async def test_what_this_process_knows_better_is_kept(replicas) -> None:
    a, b = replicas
    job = job_id()
    old = datetime.now(UTC) - timedelta(minutes=1)
    a(JobEvent(id=job, state="progress", step=1, steps=9, at=old))
    await written(a, KEY_PREFIX + job, "progress")
    b.local.record(JobEvent(id=job, state="progress", step=5, steps=9))
    await b.recall([job])
    assert b.local.latest(job).step == 5  # Redis's older event does not move it back


async def test_garbage_in_redis_is_ignored(replicas) -> None:
    a, b = replicas
    job = job_id()
    await a.client.hset(KEY_PREFIX + job, mapping={"event": b"\xff{not json", "state": "x"})
    await b.recall([job])
    assert b.local.latest(job) is None


async def test_at_most_shared_size_jobs_are_kept(replicas, monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = replicas
    await a.client.delete(INDEX_KEY)
    monkeypatch.setattr(shared_registry, "SHARED_SIZE", 3)
    jobs = [job_id() for _ in range(5)]
    for job in jobs:
        a(JobEvent(id=job, state="queued"))
    await written(a, KEY_PREFIX + jobs[-1], "queued")
    kept = [job for job in jobs if await a.client.exists(KEY_PREFIX + job)]
    assert kept == jobs[-3:]
    assert await a.client.zcard(INDEX_KEY) == 3


async def test_events_recorded_while_redis_is_down_are_written_once_it_is_back(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    async with writing(SharedRegistry(server.url, JobRegistry())) as registry:
        await asyncio.to_thread(server.stop)
        job = job_id()
        registry(JobEvent(id=job, state="queued"))
        other = SharedRegistry(server.url, JobRegistry())
        assert not await other.reachable()
        await other.recall([job])  # Redis down: answers from this process alone, no error
        assert other.local.latest(job) is None
        await asyncio.sleep(1.5)  # the writer has failed at least once
        await asyncio.to_thread(server.start)
        try:
            await written(registry, KEY_PREFIX + job, "queued")
            assert await other.reachable()
            await other.recall([job])
            assert other.local.latest(job).state == "queued"
        finally:
            await other.close()
            await asyncio.to_thread(server.stop)
