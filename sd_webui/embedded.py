"""The embedded default: without `AMQP_URL`, the web app queues jobs in process and runs them
with the same JobRunner as `sd-worker`, so one command gives the whole loop on one machine.

The model loads in a thread while the page is already served; jobs sent meanwhile wait in the
queue. Generation runs in a worker thread (torch releases the GIL), so the event loop keeps
serving pages and pushing gallery updates while an image is being made. Jobs queued here live in
memory only: a restart of the web app forgets the ones not yet started (RabbitMQ mode keeps them).
It sends the same job events as a worker, straight into the process's EventHub, and honours
`publish_cancel` through the in-process cancel set.
"""

import asyncio
import logging
import time
from collections import deque
from collections.abc import Set
from enum import StrEnum
from typing import TYPE_CHECKING

from sd_webui.broker import QueueUnavailable
from sd_webui.cancellation import JobCancelled, local_cancels
from sd_webui.events import EventHub, JobEvent, get_hub, step_reporter
from sd_webui.jobs import Job
from sd_webui.queue_stats import QueueSnapshot
from sd_webui.settings import Settings
from sd_webui.worker.consumer import error_text
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

    def __init__(
        self,
        settings: Settings,
        hub: EventHub | None = None,
        cancelled: Set[str] | None = None,
    ) -> None:
        self.settings = settings
        self.status = ModelStatus.LOADING
        self.problem = ""
        self.status_changed = asyncio.Event()
        self.hub = hub or get_hub()
        self.cancelled = local_cancels() if cancelled is None else cancelled
        self._jobs: deque[Job] = deque()
        self._arrived = asyncio.Event()

    async def publish(self, jobs: list[Job]) -> None:
        if self.status is ModelStatus.FAILED:
            raise QueueUnavailable(f"The model could not be loaded: {self.problem}")
        self._jobs.extend(jobs)
        self._arrived.set()

    async def close(self) -> None:
        return None

    def waiting(self) -> int:
        """Jobs queued and not yet started."""
        return len(self._jobs)

    def ahead_of(self, job_id: str) -> int | None:
        """How many queued jobs will start before this one; None once it is not queued."""
        for index, job in enumerate(self._jobs):
            if job.id == job_id:
                return index
        return None

    def snapshot(self) -> QueueSnapshot:
        """The figures QueueStats gives in RabbitMQ mode: jobs waiting, and one worker once the
        model is loaded."""
        return QueueSnapshot(waiting=self.waiting(), workers=int(self.status is ModelStatus.READY))

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
            await self._arrived.wait()
            job = self._jobs.popleft()
            if not self._jobs:
                self._arrived.clear()
            await self._run_one(runner, job)

    async def _run_one(self, runner: "JobRunner", job: Job) -> None:
        """One job, with the events a worker would send; the hub is fed on the loop's thread."""
        if job.id in self.cancelled:
            self.hub.publish(JobEvent(id=job.id, state="cancelled"))
            record_outcome(job, "cancelled", 0.0)
            return
        self.hub.publish(JobEvent(id=job.id, state="started", worker="embedded", attempt=1))
        loop = asyncio.get_running_loop()

        def emit(event: JobEvent) -> None:
            loop.call_soon_threadsafe(self.hub.publish, event)

        started = time.perf_counter()
        try:
            on_step = step_reporter(job.id, emit, self.cancelled)
            result = await asyncio.to_thread(runner.run, job, on_step)
        except JobCancelled:
            self.hub.publish(JobEvent(id=job.id, state="cancelled"))
            record_outcome(job, "cancelled", time.perf_counter() - started)
            return
        except Exception as error:
            reason = error_text(error)
            self.hub.publish(JobEvent(id=job.id, state="failed", error=reason, attempt=1))
            record_outcome(job, "failed", time.perf_counter() - started, reason)
            return
        files = [path.name for path in result.files]
        self.hub.publish(
            JobEvent(id=job.id, state="done", files=files, filtered=result.filtered or None)
        )
        record_outcome(job, "done", result.seconds)
