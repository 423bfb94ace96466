"""The embedded default: without `AMQP_URL`, the web app queues jobs in process and runs them
with the same JobRunner as `sd-worker`, so one command gives the whole loop on one machine.

The model loads in a thread while the page is already served; jobs sent meanwhile wait in the
queue. Generation runs in a worker thread (torch releases the GIL), so the event loop keeps
serving pages and pushing gallery updates while an image is being made. Jobs queued here live in
memory only: a restart of the web app forgets the ones not yet started (RabbitMQ mode keeps them).
"""

import asyncio
import logging
import time
from enum import StrEnum
from typing import TYPE_CHECKING

from sd_webui.broker import QueueUnavailable
from sd_webui.jobs import Job
from sd_webui.settings import Settings
from sd_webui.worker.metrics import record_outcome
from sd_webui.worker.model_source import ModelUnavailable, locate_model

if TYPE_CHECKING:
    from sd_webui.worker.runner import JobRunner

log = logging.getLogger(__name__)


class ModelStatus(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class EmbeddedQueue:
    """An in-process job queue with one worker, behind the same seam as the AMQP Publisher."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.status = ModelStatus.LOADING
        self.problem = ""
        self.status_changed = asyncio.Event()
        self._jobs: asyncio.Queue[Job] = asyncio.Queue()

    async def publish(self, jobs: list[Job]) -> None:
        if self.status is ModelStatus.FAILED:
            raise QueueUnavailable(f"The model could not be loaded: {self.problem}")
        for job in jobs:
            self._jobs.put_nowait(job)

    async def is_reachable(self) -> bool:
        return self.status is not ModelStatus.FAILED

    async def close(self) -> None:
        return None

    def waiting(self) -> int:
        """Jobs queued and not yet started."""
        return self._jobs.qsize()

    def _set_status(self, status: ModelStatus, problem: str = "") -> None:
        self.status, self.problem = status, problem
        self.status_changed.set()

    async def _load(self) -> "JobRunner | None":
        try:
            source = await asyncio.to_thread(locate_model, self.settings.sd_model)
            # Imported here: torch and diffusers cost seconds, which the page need not wait for.
            from sd_webui.worker.runner import JobRunner

            runner = await asyncio.to_thread(JobRunner.load, self.settings, source)
        except ModelUnavailable as error:
            log.error("%s", error)
            self._set_status(ModelStatus.FAILED, str(error))
            return None
        self._set_status(ModelStatus.READY)
        return runner

    async def run(self) -> None:
        """The lifespan task: load the model once, then run queued jobs one at a time."""
        runner = await self._load()
        if runner is None:
            return
        while True:
            job = await self._jobs.get()
            started = time.perf_counter()
            try:
                result = await asyncio.to_thread(runner.run, job)
            except Exception as error:
                record_outcome(job, "failed", time.perf_counter() - started, repr(error))
                continue
            record_outcome(job, "done", result.seconds)
