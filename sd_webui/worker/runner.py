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
from sd_webui.metadata import FastSDSettings
from sd_webui.settings import Settings
from sd_webui.worker.metrics import GENERATION_SECONDS, MODEL_LOAD_SECONDS, observe_started
from sd_webui.worker.model_source import ModelSource
from sd_webui.worker.outputs import write_job_files
from sd_webui.worker.pipeline import LoadedModel, load_pipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    """What one job produced: the seed of each image and the files, JSON first."""

    job: Job
    seeds: list[int]
    files: list[Path]
    seconds: float


class JobRunner:
    """Holds the loaded model; runs one job at a time, from whichever thread calls it."""

    def __init__(self, model: LoadedModel, images_dir: Path) -> None:
        self.model = model
        self.images_dir = images_dir
        self._lock = threading.Lock()

    @classmethod
    def load(cls, settings: Settings, source: ModelSource) -> "JobRunner":
        """Load and warm up the model `locate_model` found (raises ModelUnavailable)."""
        started = time.perf_counter()
        model = load_pipeline(settings, source)
        seconds = time.perf_counter() - started
        MODEL_LOAD_SECONDS.set(seconds)
        log.info("model ready in %.1f s", seconds)
        return cls(model, settings.images_dir)

    def run(self, job: Job, on_step: Callable[[int, int], None] | None = None) -> JobResult:
        """Generate the job's images and write its files; blocking, so call it off the loop.

        `on_step(step, steps)` is called after each denoising step (progress events); when it
        raises (JobCancelled), nothing is written and the exception comes out of `run`.
        """
        with self._lock:
            observe_started(job)
            started = time.perf_counter()
            images, seeds = self.model.generate(job, on_step)
            settings = FastSDSettings.for_job(
                job, model_id=self.model.model_id, seeds=seeds, **self.model.metadata
            )
            files = write_job_files(self.images_dir, job.id, settings, images)
            seconds = time.perf_counter() - started
        GENERATION_SECONDS.observe(seconds)
        return JobResult(job=job, seeds=seeds, files=files, seconds=seconds)
