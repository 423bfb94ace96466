"""The AMQP side of the worker: take jobs from `tasks` one at a time and settle each message.

A message is acknowledged only once its job's files are all in place, so a worker killed at any
moment leaves its job in the queue for the next one. What can never succeed (a body that breaks
contract 1) goes to `tasks.dead` at once; what failed while generating is tried again, up to
MAX_ATTEMPTS, by republishing it with an attempt counter, then dead-lettered with the error.
Along the way it emits job events (started, progress, done, failed, cancelled) and skips or
stops the jobs the cancel stream names; neither can hold up or lose a job.
"""

import asyncio
import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection

from sd_webui.broker import connect, declare_queues
from sd_webui.cancellation import CancelWatcher, JobCancelled
from sd_webui.events import EventEmitter, JobEvent, step_reporter, worker_name
from sd_webui.jobs import InvalidJob, Job, decode_job, parse_job
from sd_webui.settings import Settings
from sd_webui.worker.metrics import record_invalid, record_outcome

if TYPE_CHECKING:
    from sd_webui.worker.runner import JobRunner

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
ATTEMPT_HEADER = "x-attempt"
ERROR_HEADER = "x-error"
MAX_ERROR_CHARS = 1000
RECONNECT_MAX_DELAY_S = 30.0
# Exit status when SHUTDOWN_GRACE_S ran out: the job in hand went back to the queue.
EXIT_UNFINISHED = 1


def job_from_message(message: AbstractIncomingMessage) -> Job:
    """The job of a message; raises InvalidJob.

    A body without `id` takes the message's `message_id` when that is a valid job id, so a
    redelivered message writes the same file names; an old `{"prompt", "count"}` message with
    neither gets a fresh id.
    """
    job = decode_job(message.body)
    if "id" not in job.model_fields_set and message.message_id:
        try:
            return parse_job({**job.model_dump(), "id": message.message_id})
        except InvalidJob:
            return job
    return job


def attempt_of(message: AbstractIncomingMessage) -> int:
    """Which attempt this delivery is (1 for a message nobody has retried)."""
    value = (message.headers or {}).get(ATTEMPT_HEADER, 1)
    return value if isinstance(value, int) and value >= 1 else 1


def error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]


class Consumer:
    """Consumes `QUEUE_NAME` with prefetch 1 and hands each job to the JobRunner off the loop."""

    def __init__(
        self, settings: Settings, runner: "JobRunner", events: EventEmitter | None = None
    ) -> None:
        if settings.amqp_url is None:
            raise ValueError("the AMQP consumer needs AMQP_URL")
        self.settings = settings
        self.runner = runner
        self.events = events or EventEmitter(settings.amqp_url, settings.events_exchange)
        self.cancels = CancelWatcher(settings.cancel_queue)
        self.worker = worker_name()
        self._stop = asyncio.Event()
        self._accepting = True
        self._consuming = False
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._current: asyncio.Task[Any] | None = None

    def is_ready(self) -> bool:
        """For /readyz: consuming, on a connection that is up right now."""
        connection = self._connection
        return self._consuming and connection is not None and connection.connected.is_set()

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
            self._connection = await self._connect()
            if self._connection is None:
                return 0
            async with self._connection:
                return await self._consume(self._connection)
        finally:
            await self.events.close()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    async def _connect(self) -> AbstractRobustConnection | None:
        """Wait for the broker (it may start after the worker); None if stopped meanwhile."""
        delay = 1.0
        while not self._stop.is_set():
            try:
                return await connect(self.settings.amqp_url or "")
            except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as error:
                log.warning("broker unreachable (%r); retrying in %.0f s", error, delay)
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except TimeoutError:
                delay = min(delay * 2, RECONNECT_MAX_DELAY_S)
        return None

    async def _consume(self, connection: AbstractRobustConnection) -> int:
        self._channel = await connection.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=1)
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
        await connection.close()
        logging.shutdown()
        os._exit(EXIT_UNFINISHED)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if not self._accepting:
            await message.nack(requeue=True)  # delivered just before the consumer was cancelled
            return
        self._current = asyncio.current_task()
        if self.settings.exit_after_one_task:
            self._accepting = False
        try:
            await self._handle(message)
        except Exception:
            log.exception("could not settle a message; the broker will deliver it again")
        finally:
            self._current = None
            if self.settings.exit_after_one_task:
                self.stop()

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            job = job_from_message(message)
        except InvalidJob as error:
            reason = str(error)
            await self._republish(message, self.settings.dead_letter_queue, {ERROR_HEADER: reason})
            await message.ack()
            record_invalid(message.message_id, reason)
            return
        attempt = attempt_of(message)
        if job.id in self.cancels.cancelled:
            await message.ack()
            self.events.emit(JobEvent(id=job.id, state="cancelled"))
            record_outcome(job, "cancelled", 0.0)
            return
        self.events.emit(JobEvent(id=job.id, state="started", worker=self.worker, attempt=attempt))
        on_step = step_reporter(job.id, self.events.emit, self.cancels.cancelled)
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
            seconds, reason = time.perf_counter() - started, error_text(error)
            if attempt < MAX_ATTEMPTS:
                headers = {ATTEMPT_HEADER: attempt + 1, ERROR_HEADER: reason}
                await self._republish(message, self.settings.queue_name, headers)
                outcome = "retry"
            else:
                headers = {ATTEMPT_HEADER: attempt, ERROR_HEADER: reason}
                await self._republish(message, self.settings.dead_letter_queue, headers)
                outcome = "failed"
            await message.ack()
            if outcome == "failed":
                self.events.emit(JobEvent(id=job.id, state="failed", error=reason, attempt=attempt))
            record_outcome(job, outcome, seconds, reason)
            return
        await message.ack()
        files = [path.name for path in result.files]
        self.events.emit(JobEvent(id=job.id, state="done", files=files))
        record_outcome(job, "done", result.seconds)

    async def _republish(
        self, message: AbstractIncomingMessage, queue_name: str, headers: dict[str, Any]
    ) -> None:
        """Publish a copy of `message` (same body and id) with extra headers, confirmed."""
        assert self._channel is not None
        await self._channel.default_exchange.publish(
            aio_pika.Message(
                message.body,
                headers={**(message.headers or {}), **headers},
                content_type=message.content_type,
                message_id=message.message_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=queue_name,
        )
