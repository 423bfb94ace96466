"""The AMQP side of the worker: take jobs from `tasks` and settle each message.

Jobs run one at a time, or with BATCH_JOBS > 1 (for GPUs) the compatible ones among those
waiting share one pipeline call. A message is acknowledged only once its job's files are all in
place (with S3_BUCKET: uploaded, then removed from the worker's own folder), so a worker killed
at any moment leaves its job in the queue for the next one. What can never succeed (a body that
breaks contract 1, a job over MAX_JOB_UNITS) goes to `tasks.dead` at once; what failed while
generating or uploading is tried again, up to MAX_ATTEMPTS, by republishing it with an attempt
counter, then dead-lettered with the error. A delivery the broker gives again because its
worker died holding it counts as an attempt too, so a job that kills its worker (out of memory)
ends in `tasks.dead` instead of taking every worker down in turn. Along the way it emits job
events (started, progress, done, failed, cancelled) and skips or stops the jobs the cancel
stream names; neither can hold up or lose a job.

Settling is total: whatever a delivery holds, it is run, dead-lettered or (when its connection
was lost, so the broker delivers it again) let go, and an error in that path dead-letters it
rather than leaving it held. A job whose files an earlier attempt completed (its acknowledgement
was lost), in the worker's folder or in the bucket, is acknowledged without generating again.
"""

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection
from aio_pika.exceptions import ChannelInvalidStateError

from sd_webui.broker import (
    PUBLISH_TIMEOUT_S,
    UNDECODABLE_HEADER,
    connect_when_up,
    declare_queues,
)
from sd_webui.bucket import Bucket, BucketError
from sd_webui.bucket import error_text as bucket_error_text
from sd_webui.cancellation import CancelWatcher, JobCancelled
from sd_webui.events import EventEmitter, JobEvent, step_reporter, worker_name
from sd_webui.jobs import (
    InvalidJob,
    Job,
    check_job_size,
    decode_body,
    decode_job,
    is_job_id,
    new_job_id,
    parse_job,
)
from sd_webui.metadata import filtered_images
from sd_webui.settings import Settings
from sd_webui.worker.batching import batch_key, batches
from sd_webui.worker.metrics import record_invalid, record_outcome
from sd_webui.worker.outputs import completed_files

if TYPE_CHECKING:
    from sd_webui.worker.runner import JobRunner

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
ATTEMPT_HEADER = "x-attempt"
ERROR_HEADER = "x-error"
MAX_ERROR_CHARS = 1000
WORKER_DIED = "worker died while running it"
# Between two tries of an upload: doubling from 1 s up to this, within S3_UPLOAD_RETRY_S.
UPLOAD_BACKOFF_MAX_S = 15.0
# Exit status when SHUTDOWN_GRACE_S ran out: the job in hand went back to the queue.
EXIT_UNFINISHED = 1
# BATCH_JOBS > 1: how long the first waiting message waits for others to join its batch.
BATCH_WINDOW_S = 0.05


def lacks_job_id(message: AbstractIncomingMessage) -> bool:
    """An old `{"prompt", "count"}` message with neither `id` nor a job-id `message_id`.

    Any id a worker made up for it would change at each delivery, so a redelivery after a crash
    would write a second set of files; such a message is given an id first (Consumer._stamp).
    A body that is not a JSON object is left to validation, which dead-letters it.
    """
    if UNDECODABLE_HEADER in (message.headers or {}):
        return False  # left to validation, which dead-letters it
    try:
        body = decode_body(message.body)
    except InvalidJob:
        return False
    return "id" not in body and not is_job_id(message.message_id)


def job_from_message(message: AbstractIncomingMessage) -> Job:
    """The job of a message; raises InvalidJob. A body without `id` takes the message's
    `message_id` (a job id, see `lacks_job_id`), so a redelivery writes the same file names."""
    if problem := (message.headers or {}).get(UNDECODABLE_HEADER):
        raise InvalidJob(f"the message's properties could not be decoded ({problem})")
    job = decode_job(message.body)
    if "id" not in job.model_fields_set and is_job_id(message.message_id):
        return parse_job({**job.model_dump(), "id": message.message_id})
    return job


def attempt_of(message: AbstractIncomingMessage) -> int:
    """Which attempt this delivery is (1 for a message nobody has retried)."""
    value = (message.headers or {}).get(ATTEMPT_HEADER, 1)
    return value if isinstance(value, int) and value >= 1 else 1


def error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]


def is_settled(message: AbstractIncomingMessage) -> bool:
    """Acknowledged or rejected, or beyond settling: its channel is gone, so the broker has
    already put it back in the queue."""
    try:
        message.channel  # noqa: B018 (raises once the channel is closed)
    except ChannelInvalidStateError:
        return True
    return message.processed


def copied_headers(message: AbstractIncomingMessage) -> dict[str, Any]:
    """The message's headers for a copy of it, less `CC` and `BCC`: RabbitMQ would route the
    copy once more to the queues they name."""
    return {
        key: value for key, value in (message.headers or {}).items() if key not in ("CC", "BCC")
    }


def filtered_in(sidecar: Path) -> list[int]:
    """The images the safety checker blacked out, from the job's `<id>.json`."""
    try:
        return filtered_images(json.loads(sidecar.read_bytes()))
    except (OSError, ValueError):
        return []


def remove_files(files: list[Path]) -> None:
    """Remove a job's files, the JSON first: images without it are never taken for a job."""
    for path in files:
        path.unlink(missing_ok=True)


class Consumer:
    """Consumes `QUEUE_NAME` with prefetch BATCH_JOBS and hands the jobs to the JobRunner off
    the loop, one job or one batch at a time."""

    def __init__(
        self, settings: Settings, runner: "JobRunner", events: EventEmitter | None = None
    ) -> None:
        if settings.amqp_url is None:
            raise ValueError("the AMQP consumer needs AMQP_URL")
        self.settings = settings
        self.runner = runner
        self.events = events or EventEmitter(settings.amqp_url, settings.events_exchange)
        self.cancels = CancelWatcher(settings.cancel_queue)
        self.bucket = Bucket(settings) if settings.s3_bucket else None
        self.worker = worker_name()
        self._stop = asyncio.Event()
        self._accepting = True
        self._consuming = False
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._current: asyncio.Task[Any] | None = None
        self._waiting: list[AbstractIncomingMessage] = []
        self._arrived = asyncio.Event()
        self._turn = asyncio.Lock()
        # For liveness: the deliveries received and not yet settled, and when the last sign of
        # progress came (a delivery, a denoising step, a settle; steps come from the job thread).
        # The health server's thread reads them, hence the lock.
        self._held: set[AbstractIncomingMessage] = set()
        self._held_lock = threading.Lock()
        self._progress_at = time.monotonic()
        self._settling: set[asyncio.Task[None]] = set()

    def is_ready(self) -> bool:
        """For /readyz: consuming, on a connection that is up right now."""
        connection = self._connection
        return self._consuming and connection is not None and connection.connected.is_set()

    def held(self) -> int:
        """Deliveries received and not yet settled."""
        with self._held_lock:
            return sum(not is_settled(message) for message in self._held)

    def stalled(self) -> str | None:
        """For /healthz: why the worker is stuck, when it holds a delivery that made no progress
        (no step, no settle) for STALL_TIMEOUT_S; None while it is healthy."""
        held = self.held()
        idle = time.monotonic() - self._progress_at
        if held and idle > self.settings.stall_timeout_s:
            limit = self.settings.stall_timeout_s
            return f"{held} held, no progress for {idle:.0f} s (STALL_TIMEOUT_S={limit:g})"
        return None

    def _progressed(self) -> None:
        self._progress_at = time.monotonic()

    def stop(self) -> None:
        """Take no new job and end `run()` once the job in hand is settled (SIGTERM, SIGINT)."""
        if not self._stop.is_set():
            log.info("stopping: no new jobs")
        self._accepting = False
        self._stop.set()

    async def run(self) -> int:
        """Consume until stopped; returns the exit status (the process ends here if the job in
        hand outlives SHUTDOWN_GRACE_S, since its thread cannot be interrupted)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        await self.events.start()
        try:
            self._connection = await connect_when_up(
                self.settings.amqp_url or "", "jobs", self._stop
            )
            if self._connection is None:
                return 0
            async with self._connection:
                return await self._consume(self._connection)
        finally:
            await self.events.close()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    async def _consume(self, connection: AbstractRobustConnection) -> int:
        self._channel = await connection.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=self.settings.batch_jobs)
        await declare_queues(self._channel, self.settings.queue_name)
        await self.cancels.start(connection)
        queue = await self._channel.get_queue(self.settings.queue_name)
        consumer_tag = await queue.consume(self._on_message)
        self._consuming = True
        log.info("consuming %s", self.settings.queue_name)
        await self._stop.wait()
        self._consuming = False
        await queue.cancel(consumer_tag)
        current = self._current
        if current is None or current.done():
            return 0
        grace = self.settings.shutdown_grace_s
        log.info("finishing the job in hand (up to SHUTDOWN_GRACE_S=%g s)", grace)
        done, _ = await asyncio.wait({current}, timeout=grace)
        if current in done:
            return 0
        log.warning("SHUTDOWN_GRACE_S ran out: the unfinished job goes back to the queue")
        with self._held_lock:
            unfinished = [message for message in self._held if not is_settled(message)]
        for message in unfinished:  # a stop, not a death: the attempt is not counted
            try:
                await self._give_back(message)
            except Exception as error:  # the broker gone too: it redelivers the job itself
                log.warning("could not give back %s: %s", message.message_id, error)
        await connection.close()
        logging.shutdown()
        os._exit(EXIT_UNFINISHED)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        """Settle the delivery in a task of its own: aio-pika cancels the callbacks of a channel
        that closes (the broker went away), and the job in hand must still finish, write its
        log line and metric, and find its acknowledgement lost rather than vanish midway."""
        task = asyncio.create_task(self._settle(message))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        await asyncio.shield(task)

    async def _settle(self, message: AbstractIncomingMessage) -> None:
        """Take the delivery, and dead-letter it if that fails in any way (see `_take`)."""
        with self._held_lock:
            self._held.add(message)
        self._progressed()
        try:
            await self._take(message)
        except Exception as error:
            await self._dead_letter_unsettled([message], error)
        finally:
            self._progressed()
            with self._held_lock:
                self._held = {held for held in self._held if not is_settled(held)}

    async def _take(self, message: AbstractIncomingMessage) -> None:
        """Every delivery joins `_waiting`; the task that still finds its message there when its
        turn comes takes what is waiting as one batch (just its own with BATCH_JOBS=1)."""
        if lacks_job_id(message):
            await self._stamp(message)
            return
        if message.redelivered and await self._counted_as_died(message):
            return
        self._waiting.append(message)
        self._arrived.set()
        async with self._turn:
            if message not in self._waiting:
                return  # an earlier batch took it
            if not self._accepting:
                self._waiting.remove(message)
                await self._give_back(message)  # delivered just before the consumer stopped
                return
            await self._wait_for_batch()
            batch = self._waiting[: self.settings.batch_jobs]
            del self._waiting[: len(batch)]
            self._current = asyncio.current_task()
            if self.settings.exit_after_one_task:
                self._accepting = False
            try:
                await self._handle(batch)
            finally:
                self._current = None
                if self.settings.exit_after_one_task:
                    self.stop()

    async def _give_back(self, message: AbstractIncomingMessage) -> None:
        """Return a delivery this worker will not run. A requeue would mark it `redelivered`,
        which the next worker counts as an attempt that killed its worker (`_accept`), so it goes
        back as a copy, last in the queue, unless it already carries the flag."""
        if message.redelivered:
            await message.nack(requeue=True)
            return
        await self._republish(message, self.settings.queue_name)
        await message.ack()

    async def _wait_for_batch(self) -> None:
        """Let the messages already on their way join the batch: wait until BATCH_JOBS are
        waiting or BATCH_WINDOW_S has passed (no wait at all with BATCH_JOBS=1)."""
        deadline = asyncio.get_running_loop().time() + BATCH_WINDOW_S
        while len(self._waiting) < self.settings.batch_jobs:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def _dead_letter_unsettled(
        self, messages: list[AbstractIncomingMessage], error: Exception
    ) -> None:
        """The last resort when settling itself failed: each message still held goes to the dead
        letter queue with the error and none of its own headers (they may be the trouble), so
        that no delivery is left to block the worker. A message whose channel is gone is left to
        the broker, which delivers it again; one that cannot be dead-lettered is requeued."""
        log.debug("settling failed", exc_info=error)
        for message in messages:
            if message.processed:
                continue
            if is_settled(message):
                log.warning(
                    "the connection was lost before %s was settled (%s); the broker delivers "
                    "it again",
                    message.message_id,
                    error_text(error),
                )
                continue
            reason = f"not settled: {error_text(error)}"
            log.error("could not settle %s (%s): dead-lettering it", message.message_id, reason)
            try:
                await self._republish(
                    message, self.settings.dead_letter_queue, reason=reason, own_headers=False
                )
                await message.ack()
                record_invalid(message.message_id, reason)
            except Exception as failure:
                log.error("could not dead-letter %s either: %s", message.message_id, failure)
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)

    async def _handle(self, messages: list[AbstractIncomingMessage]) -> None:
        """Settle each message: its valid jobs run in groups that can share a pipeline call."""
        accepted = []
        for message in messages:
            try:
                job = await self._accept(message)
            except Exception as error:
                await self._dead_letter_unsettled([message], error)
                continue
            if job is not None:
                accepted.append((message, job))
        for group in batches(accepted, lambda pair: batch_key(pair[1]), self.settings.batch_jobs):
            try:
                if len(group) == 1:
                    await self._run_alone(*group[0])
                else:
                    await self._run_batch(group)
            except Exception as error:
                await self._dead_letter_unsettled([message for message, _ in group], error)

    async def _accept(self, message: AbstractIncomingMessage) -> Job | None:
        """The message's job to run, or None once the message is settled: dead-lettered when it
        breaks contract 1 or MAX_JOB_UNITS, acknowledged when its job was cancelled or is already
        done."""
        try:
            job = job_from_message(message)
            check_job_size(job, self.settings.max_job_units)
        except InvalidJob as error:
            reason = str(error)
            await self._republish(message, self.settings.dead_letter_queue, reason=reason)
            await message.ack()
            record_invalid(message.message_id, reason)
            return None
        if await self._skip_cancelled(message, job) or await self._already_done(message, job):
            return None
        return job

    async def _counted_as_died(self, message: AbstractIncomingMessage) -> bool:
        """A redelivery: the worker that held it went away (killed, out of memory, its
        connection lost), and unless that attempt completed the job, it was a failed attempt.
        The copy that goes back (or to `tasks.dead`) carries the count; like `_stamp`, this is
        not the task of one-task mode. False leaves the delivery to the usual path (invalid,
        cancelled or already done)."""
        try:
            job = job_from_message(message)
        except InvalidJob:
            return False
        if job.id in self.cancels.cancelled or any(await self._completed(job)):
            return False
        log.warning("job %s came back from a worker that died running it", job.id)
        await self._failed_attempt(message, job, WORKER_DIED, 0.0)
        return True

    async def _completed(self, job: Job) -> tuple[list[Path] | None, list[str] | None]:
        """Where an earlier attempt completed the job (its acknowledgement was lost): all its
        files in this worker's folder (not uploaded yet, with a bucket), else all its names in
        the bucket; (None, None) when neither."""
        files = await asyncio.to_thread(completed_files, self.settings.images_dir, job)
        if files is not None or self.bucket is None:
            return files, None
        try:
            return None, await asyncio.to_thread(self.bucket.completed_job, job)
        except BucketError as error:
            log.warning("could not look for job %s in the bucket (%s)", job.id, error)
            return None, None

    async def _already_done(self, message: AbstractIncomingMessage, job: Job) -> bool:
        """Settle a job an earlier attempt completed: upload the files found here (with a
        bucket), then acknowledge it as done."""
        files, names = await self._completed(job)
        if files is not None:
            await self._finish(message, job, files, 0.0, outcome="already-done")
            return True
        if names is None:
            return False
        record_outcome(job, "already-done", 0.0)
        await message.ack()
        self.events.emit(JobEvent(id=job.id, state="done", files=names))
        return True

    async def _skip_cancelled(self, message: AbstractIncomingMessage, job: Job) -> bool:
        """Acknowledge a job cancelled before it started, without running it."""
        if job.id not in self.cancels.cancelled:
            return False
        await message.ack()
        self.events.emit(JobEvent(id=job.id, state="cancelled"))
        record_outcome(job, "cancelled", 0.0)
        return True

    async def _run_alone(self, message: AbstractIncomingMessage, job: Job) -> None:
        attempt = attempt_of(message)
        self.events.emit(JobEvent(id=job.id, state="started", worker=self.worker, attempt=attempt))
        on_step = self._step_reporter(job)
        started = time.perf_counter()
        try:
            result = await asyncio.to_thread(self.runner.run, job, on_step)
        except JobCancelled:
            await message.ack()
            self.events.emit(JobEvent(id=job.id, state="cancelled"))
            record_outcome(job, "cancelled", time.perf_counter() - started)
            return
        except Exception as error:
            log.debug("job %s attempt %d failed", job.id, attempt, exc_info=error)
            seconds = time.perf_counter() - started
            await self._failed_attempt(message, job, error_text(error), seconds)
            return
        await self._finish(message, job, result.files, result.seconds)

    async def _failed_attempt(
        self, message: AbstractIncomingMessage, job: Job, reason: str, seconds: float
    ) -> bool:
        """Queue the job again with its attempt counted, or after MAX_ATTEMPTS dead-letter it
        with `reason` (True); either way the copy is confirmed before this delivery is
        acknowledged."""
        attempt = attempt_of(message)
        if attempt < MAX_ATTEMPTS:
            await self._republish(message, self.settings.queue_name, reason, attempt + 1)
            outcome = "retry"
        else:
            await self._republish(message, self.settings.dead_letter_queue, reason, attempt)
            outcome = "failed"
        await message.ack()
        if outcome == "failed":
            self.events.emit(JobEvent(id=job.id, state="failed", error=reason, attempt=attempt))
        record_outcome(job, outcome, seconds, reason)
        return outcome == "failed"

    async def _run_batch(self, group: list[tuple[AbstractIncomingMessage, Job]]) -> None:
        """One pipeline call for the group, progress reported to each job. Any error (a cancel
        included) runs each job alone instead, so one bad job cannot fail the others."""
        reporters = []
        for message, job in group:
            attempt = attempt_of(message)
            self.events.emit(
                JobEvent(id=job.id, state="started", worker=self.worker, attempt=attempt)
            )
            reporters.append(self._step_reporter(job))

        def on_step(step: int, steps: int) -> None:
            for report in reporters:
                report(step, steps)

        jobs = [job for _, job in group]
        log.info("batch of %d jobs: %s", len(jobs), " ".join(job.id for job in jobs))
        try:
            results = await asyncio.to_thread(self.runner.run_many, jobs, on_step)
        except Exception as error:
            log.warning("batch failed (%s); running its jobs one by one", error_text(error))
            for message, job in group:
                if not await self._skip_cancelled(message, job):
                    await self._run_alone(message, job)
            return
        for (message, job), result in zip(group, results, strict=True):
            await self._finish(message, job, result.files, result.seconds)

    def _step_reporter(self, job: Job) -> Callable[[int, int], None]:
        """The job's `on_step`: progress events, cancels, and a sign of life for /healthz."""
        report = step_reporter(job.id, self.events.emit, self.cancels.cancelled)

        def on_step(step: int, steps: int) -> None:
            self._progressed()
            report(step, steps)

        return on_step

    async def _finish(
        self,
        message: AbstractIncomingMessage,
        job: Job,
        files: list[Path],
        seconds: float,
        outcome: str = "done",
    ) -> None:
        """Acknowledge a job whose files are all in place: with a bucket, once they are uploaded
        (a failed upload is a failed attempt, its files kept here for the next one). Its log
        line and metric come first: the files are safe even if the acknowledgement is lost with
        the connection (then the redelivery finds them complete, see `_already_done`)."""
        filtered = await asyncio.to_thread(filtered_in, files[0])
        if self.bucket is not None:
            try:
                await self._upload(job, files)
            except BucketError as error:
                reason = f"upload to the bucket failed: {bucket_error_text(error)}"
                if await self._failed_attempt(message, job, reason[:MAX_ERROR_CHARS], seconds):
                    remove_files(files)  # dead-lettered: not kept in the pod's folder for ever
                return
        record_outcome(job, outcome, seconds)
        await message.ack()
        names = [path.name for path in files]
        self.events.emit(JobEvent(id=job.id, state="done", files=names, filtered=filtered or None))

    async def _upload(self, job: Job, files: list[Path]) -> None:
        """Upload the job's files, JSON first, trying again for S3_UPLOAD_RETRY_S (an endpoint
        that restarts, a full disk there); then remove them here, so that the pod's folder
        holds only jobs not yet uploaded. Raises the last BucketError when time ran out."""
        assert self.bucket is not None
        deadline = time.monotonic() + self.settings.s3_upload_retry_s
        delay = 1.0
        while True:
            try:
                await asyncio.to_thread(self.bucket.upload_job, files)
                break
            except BucketError as error:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                log.warning(
                    "upload of job %s failed (%s); trying again in %.0f s",
                    job.id,
                    bucket_error_text(error),
                    min(delay, left),
                )
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, UPLOAD_BACKOFF_MAX_S)
        remove_files(files)

    async def _stamp(self, message: AbstractIncomingMessage) -> None:
        """Give an id-less message a job id that survives redelivery: publish it again with
        `message_id` set to a new job id (confirmed), then acknowledge the original. The copy
        takes its turn again at the back of the queue; this is not the task of one-task mode."""
        job_id = new_job_id()
        await self._republish(message, self.settings.queue_name, message_id=job_id)
        await message.ack()
        log.info("a message without a job id was queued again as job %s", job_id)

    async def _republish(
        self,
        message: AbstractIncomingMessage,
        queue_name: str,
        reason: str | None = None,
        attempt: int | None = None,
        message_id: str | None = None,
        own_headers: bool = True,
    ) -> None:
        """Publish a copy of `message` (same body, headers and id unless given), with the
        `reason` and `attempt` headers when given, and wait for the broker's confirm."""
        assert self._channel is not None
        headers = copied_headers(message) if own_headers else {}
        if reason is not None:
            headers[ERROR_HEADER] = reason
        if attempt is not None:
            headers[ATTEMPT_HEADER] = attempt
        await self._channel.default_exchange.publish(
            aio_pika.Message(
                message.body,
                headers=headers,
                content_type=message.content_type,
                message_id=message_id or message.message_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=queue_name,
            timeout=PUBLISH_TIMEOUT_S,
        )
