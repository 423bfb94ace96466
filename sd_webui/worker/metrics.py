"""What every job leaves behind: one log line and the Prometheus series of the worker.

Shared by the AMQP consumer and the web app's embedded queue, so both report the same way.
"""

import logging
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram

from sd_webui.jobs import Job

log = logging.getLogger("sd_webui.worker")

JOBS = Counter("sd_worker_jobs", "Jobs handled, by outcome.", ["outcome"])
GENERATION_SECONDS = Histogram(
    "sd_worker_generation_seconds",
    "Seconds to generate and write one job's images.",
    buckets=(0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600),
)
QUEUED_SECONDS = Histogram(
    "sd_worker_queued_seconds",
    "Seconds from a job's submitted_at to the start of its generation.",
    buckets=(0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 3600),
)
# BATCH_JOBS > 1 puts several jobs in one call; this shows how often it happened.
PIPELINE_CALLS = Counter(
    "sd_worker_pipeline_calls", "Pipeline calls that finished, by how many jobs each ran.", ["jobs"]
)
MODEL_LOAD_SECONDS = Gauge(
    "sd_worker_model_load_seconds", "Seconds it took to load and warm up the model."
)

# Outcomes: done (files written), already-done (an earlier attempt wrote them all, its
# acknowledgement was lost: acknowledged without generating), retry (republished after an
# error), failed (dead-lettered after the last attempt), invalid (broke contract 1, dead-lettered
# at once), cancelled (skipped or stopped at a step, no files).
OUTCOMES = ("done", "already-done", "retry", "failed", "invalid", "cancelled")
for _outcome in OUTCOMES:
    JOBS.labels(_outcome)


def observe_started(job: Job) -> None:
    """Record how long the job waited, when its publisher said when it was submitted."""
    if job.submitted_at is not None:
        submitted = job.submitted_at
        if submitted.tzinfo is None:
            submitted = submitted.replace(tzinfo=UTC)
        QUEUED_SECONDS.observe(max(0.0, (datetime.now(UTC) - submitted).total_seconds()))


def record_invalid(message_id: str | None, reason: str) -> None:
    """Count a message that broke contract 1 and log it with the reason."""
    JOBS.labels("invalid").inc()
    log.warning("job %s outcome=invalid reason=%s", message_id or "-", reason)


def record_outcome(job: Job, outcome: str, seconds: float, reason: str = "") -> None:
    """Count the outcome and write the job's one log line."""
    JOBS.labels(outcome).inc()
    line = "job %s count=%d size=%dx%d steps=%d seconds=%.2f outcome=%s"
    arguments = (job.id, job.count, job.width, job.height, job.steps, seconds, outcome)
    if reason:
        log.warning(line + " reason=%s", *arguments, reason)
    else:
        log.info(line, *arguments)
