"""The broker-independent worker: a job in, its files on disk out.

The AMQP consumer and the web app's embedded queue both drive this same object, so a job gives
the same files whichever way it arrived.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sd_webui.jobs import Job
from sd_webui.metadata import FastSDSettings, filtered_images
from sd_webui.settings import Settings
from sd_webui.worker.metrics import (
    GENERATION_SECONDS,
    MODEL_LOAD_SECONDS,
    PIPELINE_CALLS,
    observe_started,
)
from sd_webui.worker.model_source import ModelSource
from sd_webui.worker.outputs import write_job_files
from sd_webui.worker.pipeline import LoadedModel, load_pipeline
from sd_webui.worker.safety import SafetyChecker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    """What one job produced: the seed of each image, the files (JSON first), and the 1-based
    numbers of the images the safety checker blacked out."""

    job: Job
    seeds: list[int]
    files: list[Path]
    seconds: float
    filtered: list[int]


class JobRunner:
    """Holds the loaded model; runs one job (or one batch) at a time, from any thread."""

    def __init__(
        self, model: LoadedModel, images_dir: Path, checker: SafetyChecker | None = None
    ) -> None:
        self.model = model
        self.images_dir = images_dir
        self.checker = checker
        self._lock = threading.Lock()

    @classmethod
    def load(cls, settings: Settings, source: ModelSource) -> "JobRunner":
        """Load and warm up the model `locate_model` found, and the safety checker with
        SD_SAFETY_CHECKER (raises ModelUnavailable)."""
        started = time.perf_counter()
        model = load_pipeline(settings, source)
        checker = SafetyChecker.load(settings, model.device) if settings.sd_safety_checker else None
        seconds = time.perf_counter() - started
        MODEL_LOAD_SECONDS.set(seconds)
        log.info("model ready in %.1f s", seconds)
        return cls(model, settings.images_dir, checker)

    def run(self, job: Job, on_step: Callable[[int, int], None] | None = None) -> JobResult:
        """Generate the job's images and write its files; blocking, so call it off the loop.

        `on_step(step, steps)` is called after each denoising step (progress events); when it
        raises (JobCancelled), nothing is written and the exception comes out of `run`.
        """
        return self.run_many([job], on_step)[0]

    def run_many(
        self, jobs: list[Job], on_step: Callable[[int, int], None] | None = None
    ) -> list[JobResult]:
        """`run` for jobs sharing `batch_key`, in one pipeline call; each job's files are written
        in turn, and any error (JobCancelled included) comes out before all of them are.
        """
        with self._lock:
            for job in jobs:
                observe_started(job)
            started = time.perf_counter()
            outputs = self.model.generate_many(jobs, on_step)
            PIPELINE_CALLS.labels(str(len(jobs))).inc()
            results = []
            for job, (images, seeds) in zip(jobs, outputs, strict=True):
                checked: dict[str, object] = {}
                if self.checker is not None:
                    images, flags = self.checker.filter(images)
                    checked = {"use_safety_checker": True, "nsfw": flags}
                settings = FastSDSettings.for_job(
                    job,
                    model_id=self.model.model_id,
                    seeds=seeds,
                    **self.model.metadata,
                    **checked,
                )
                files = write_job_files(self.images_dir, job.id, settings, images)
                seconds = time.perf_counter() - started
                filtered = filtered_images(settings.model_dump())
                results.append(JobResult(job, seeds, files, seconds, filtered))
        for result in results:
            GENERATION_SECONDS.observe(result.seconds)
        return results
