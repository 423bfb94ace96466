"""A job done again changes nothing: seeds come from the job id, and a worker that receives a job
whose files are complete (its acknowledgement was lost) acknowledges it without generating.
The two ways an acknowledgement is lost, for real: the worker killed after its last rename, and
the broker stopped in the middle of the job."""

import uuid
from pathlib import Path

import pytest
from broker_relay import BrokerRelay
from worker_support import WorkerProcess, job_files, publish, ready_count, wait_for

from sd_webui.jobs import Job
from sd_webui.settings import Settings
from sd_webui.worker.pipeline import job_seeds
from tests.rabbitmq_node import RabbitNode

pytestmark = pytest.mark.broker

# No seed: before, each attempt drew new random seeds and rewrote other pixels.
# Slow enough (about 5 s on two cores, 0.7 s at 512x512 and 3 steps) that the broker's stop or
# the relay's hold always lands while it runs, on a faster CPU too.
UNSEEDED_JOB = {"prompt": "a slow green dog", "count": 2, "width": 768, "height": 768, "steps": 8}


def test_a_job_without_a_seed_has_the_same_seeds_at_every_attempt() -> None:
    job_id = uuid.uuid4()
    job = Job(prompt="green dog", count=3, id=job_id.hex)
    seeds = job_seeds(job)
    assert seeds == job_seeds(Job(prompt="green dog", count=3, id=job_id.hex))
    assert seeds == job_seeds(Job(prompt="green dog", count=3, id=str(job_id)))  # dashed form
    assert seeds == [seeds[0], seeds[0] + 1, seeds[0] + 2] and seeds[-1] < 2**32
    assert job_seeds(Job(prompt="green dog", count=3)) != seeds  # another job, other seeds
    assert job_seeds(Job(prompt="green dog", count=3, seed=7, id=job_id.hex)) == [7, 8, 9]


def complete(folder: Path, job_id: str, count: int) -> bool:
    names = [f"{job_id}-{index}.png" for index in range(1, count + 1)] + [f"{job_id}.json"]
    return job_files(folder, job_id) == sorted(names)


def fingerprint(folder: Path, job_id: str) -> dict[str, tuple[bytes, int, int]]:
    """Each file's bytes, inode and mtime: a file written again has another inode (rename)."""
    return {
        name: (
            (folder / name).read_bytes(),
            (folder / name).stat().st_ino,
            (folder / name).stat().st_mtime_ns,
        )
        for name in job_files(folder, job_id)
    }


def outcomes(log: str, job_id: str) -> list[str]:
    return [
        line.rpartition("outcome=")[2].split()[0]
        for line in log.splitlines()
        if f"job {job_id} " in line and "outcome=" in line
    ]


async def test_killed_after_the_files_before_the_ack_the_next_worker_does_not_regenerate(
    worker_settings: Settings, tmp_path: Path
) -> None:
    """The first worker talks to the broker through a relay that holds back what it sends once
    it has taken the job: its acknowledgement never arrives, and it is killed with -9 after its
    last rename. The broker delivers the job again; the second worker finds it complete."""
    folder, url, queue = (
        worker_settings.images_dir,
        worker_settings.amqp_url,
        worker_settings.queue_name,
    )
    job_id = uuid.uuid4().hex
    await publish(url, queue, {**UNSEEDED_JOB, "id": job_id}, message_id=job_id)
    relay = BrokerRelay()
    await relay.start()
    first = WorkerProcess(
        worker_settings.model_copy(update={"amqp_url": relay.url}), tmp_path / "first.log"
    )
    try:
        await wait_for(waiting(url, queue, 0, first), 90, "the first worker to take the job")
        relay.hold()
        assert job_files(folder, job_id) == [], "the job ended before the relay held the ack"
        await wait_for(lambda: complete(folder, job_id, 2), 90, "the first worker's files")
        await wait_for(lambda: "outcome=done" in first.log, 10, "the first completion's log line")
    finally:
        first.kill()
        await relay.stop()
    before = fingerprint(folder, job_id)
    await wait_for(waiting(url, queue, 1), 30, "the broker to requeue the unacknowledged job")

    second = WorkerProcess(worker_settings, tmp_path / "second.log", EXIT_AFTER_ONE_TASK="1")
    assert await second.wait(120) == 0, second.log
    assert outcomes(first.log, job_id) == ["done"]
    assert outcomes(second.log, job_id) == ["already-done"]
    assert fingerprint(folder, job_id) == before
    assert await ready_count(url, queue) == 0


def waiting(url: str, queue: str, count: int, worker: WorkerProcess | None = None):
    """A condition for wait_for: `count` messages ready in the queue (and `worker` alive)."""

    async def condition() -> bool:
        assert worker is None or worker.process.poll() is None, worker.log
        return await ready_count(url, queue) == count

    return condition


async def test_a_broker_restart_mid_job_leaves_the_files_as_they_were(
    rabbit_node: RabbitNode, worker_settings: Settings, tmp_path: Path
) -> None:
    """The broker stops while the job runs: the files are written, the ack is lost with the
    connection. Back up, the broker delivers the job again to the same worker, which finds it
    complete: one `done`, one `already-done`, the same bytes, the same files."""
    settings = worker_settings.model_copy(update={"amqp_url": rabbit_node.url})
    folder, url, queue = settings.images_dir, settings.amqp_url, settings.queue_name
    job_id = uuid.uuid4().hex
    await publish(url, queue, {**UNSEEDED_JOB, "id": job_id}, message_id=job_id)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        await wait_for(waiting(url, queue, 0, worker), 90, "the worker to take the job")
        rabbit_node.stop_app()
        try:
            assert job_files(folder, job_id) == [], "the job ended before the broker stopped"
            await wait_for(lambda: complete(folder, job_id, 2), 90, "the files")
            before = fingerprint(folder, job_id)
        finally:
            rabbit_node.start_app()
        await wait_for(lambda: "already-done" in outcomes(worker.log, job_id), 90, "the redelivery")
        await wait_for(waiting(url, queue, 0), 10, "the acknowledgement")
    finally:
        worker.kill()
    assert outcomes(worker.log, job_id) == ["done", "already-done"], worker.log
    assert fingerprint(folder, job_id) == before
