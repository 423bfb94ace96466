"""Scaling out: two `sd-worker` processes on one queue share the jobs, each done exactly once."""

import asyncio
import os
from pathlib import Path

from sd_webui.jobs import build_jobs
from sd_webui.settings import Settings
from tests.worker.worker_support import WorkerProcess, job_files, publish, wait_for


async def test_two_workers_share_four_jobs(
    worker_settings: Settings, images_dir: Path, tmp_path: Path
) -> None:
    """Both workers consume at once; every job's files appear exactly once, nothing left over."""
    workers = [
        WorkerProcess(worker_settings, tmp_path / f"worker-{index}.log") for index in range(2)
    ]
    try:
        await wait_for(
            lambda: all("consuming" in worker.log for worker in workers), 120, "two workers"
        )
        jobs = build_jobs("shared work", 4, in_parallel=True, steps=2)
        for job in jobs:
            await publish(
                worker_settings.amqp_url or "",
                worker_settings.queue_name,
                job.body(),
                message_id=job.id,
                content_type="application/json",
            )
        await wait_for(
            lambda: all(
                job_files(images_dir, job.id) == [f"{job.id}-1.png", f"{job.id}.json"]
                for job in jobs
            ),
            120,
            "every job's files",
        )
        await asyncio.sleep(1)  # nothing more may appear
    finally:
        for worker in workers:
            worker.kill()
    assert sorted(await asyncio.to_thread(os.listdir, images_dir)) == sorted(
        name for job in jobs for name in (f"{job.id}-1.png", f"{job.id}.json")
    )
    done = [worker.log.count("outcome=done") for worker in workers]
    assert sum(done) == 4
    assert all(count >= 1 for count in done), done
