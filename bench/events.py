"""What job events cost a job, and how fast they reach a web app.

Side by side in one process, on the demo model: JOBS jobs (STEPS steps each) through the real
Consumer and RabbitMQ, timed from publishing to the last ack with the consumer already up; once
with the EventEmitter publishing started/progress/done to `sd.events` (read back by an
EventSubscriber into an EventHub, as the web app does) and once with an emitter that was never
started (emit returns at once: the job without events). Rounds alternate to spread the noise of
a shared machine. Prints seconds per job (median of the rounds), the ratio, and the
latency from a worker's emit (the event's `at`) to the hub, and what one emit() costs the
generation thread.

Run: `python bench/events.py` (needs RabbitMQ on AMQP_URL, default the local broker).
"""

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
from prometheus_client import REGISTRY

from sd_webui.demo_model import build_demo_model
from sd_webui.events import EventEmitter, EventHub, EventSubscriber, JobEvent
from sd_webui.jobs import Job
from sd_webui.settings import Settings
from sd_webui.worker.consumer import Consumer
from sd_webui.worker.model_source import locate_model
from sd_webui.worker.runner import JobRunner

JOBS = 6
STEPS = 4
ROUNDS = 5
EMITS = 2000
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


class NoEvents(EventEmitter):
    """The baseline: never connects, so every emit() returns at once."""

    async def start(self) -> None:
        return None


def jobs_done() -> float:
    return REGISTRY.get_sample_value("sd_worker_jobs_total", {"outcome": "done"}) or 0.0


async def seconds_per_job(settings: Settings, runner: JobRunner, events: EventEmitter) -> float:
    """Start a consumer, and once it consumes, time JOBS jobs from publishing to the last ack."""
    consumer = Consumer(settings, runner, events=events)
    task = asyncio.create_task(consumer.run())
    while not consumer.is_ready():  # noqa: ASYNC110 (the consumer exposes no event for this)
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)  # the emitter connects in the background
    target = jobs_done() + JOBS
    started = time.perf_counter()
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for _ in range(JOBS):
            job = Job(prompt="a green dog", width=256, height=256, steps=STEPS, seed=1)
            await channel.default_exchange.publish(
                aio_pika.Message(job.body()), routing_key=settings.queue_name
            )
    while jobs_done() < target:  # noqa: ASYNC110 (a Prometheus counter has no event to await)
        await asyncio.sleep(0.01)
    seconds = time.perf_counter() - started
    consumer.stop()
    await task
    return seconds / JOBS


async def emit_cost(emitter: EventEmitter) -> float:
    """Microseconds one emit() takes in the calling (generation) thread, over EMITS calls."""
    event = JobEvent(id=uuid.uuid4().hex, state="progress", step=1, steps=4)

    def generation_thread() -> float:
        started = time.perf_counter()
        for _ in range(EMITS):
            emitter.emit(event)
        return (time.perf_counter() - started) / EMITS * 1e6

    return await asyncio.to_thread(generation_thread)


async def main() -> None:
    folder = Path(tempfile.mkdtemp())
    model = build_demo_model(folder / "model")
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        amqp_url=AMQP_URL,
        queue_name=f"bench-events-{suffix}",
        events_exchange=f"bench-events-{suffix}",
        cancel_queue=f"bench-cancels-{suffix}",
        images_dir=folder / "images",
        sd_model=str(model),
    )
    settings.images_dir.mkdir()
    runner = JobRunner.load(settings, locate_model(settings.sd_model))

    hub = EventHub()
    latencies: list[float] = []

    def arrived(event: JobEvent) -> None:
        latencies.append((datetime.now(UTC) - event.at).total_seconds())

    hub.add_listener(arrived)
    subscriber = EventSubscriber(AMQP_URL, settings.events_exchange, hub)
    following = asyncio.create_task(subscriber.run())
    await subscriber.ready.wait()

    with_events: list[float] = []
    without: list[float] = []
    for _ in range(ROUNDS):
        without.append(await seconds_per_job(settings, runner, NoEvents(AMQP_URL, "")))
        emitter = EventEmitter(AMQP_URL, settings.events_exchange)
        with_events.append(await seconds_per_job(settings, runner, emitter))
    job_latencies = sorted(latencies)  # before the burst below, which queues up on purpose
    emitter = EventEmitter(AMQP_URL, settings.events_exchange)
    await emitter.start()
    await asyncio.sleep(0.5)
    micros = await emit_cost(emitter)
    await emitter.close()
    following.cancel()

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for queue in (settings.queue_name, settings.dead_letter_queue, settings.cancel_queue):
            await channel.queue_delete(queue)
        await channel.exchange_delete(settings.events_exchange)

    base, evented = statistics.median(without), statistics.median(with_events)
    print(f"{JOBS} jobs x {ROUNDS} rounds, {STEPS} steps, 256x256, demo model, CPU")
    print(f"without events: {base:.3f} s/job  {[round(s, 3) for s in without]}")
    print(f"with events:    {evented:.3f} s/job  {[round(s, 3) for s in with_events]}")
    print(f"ratio with/without (medians of the rounds): {evented / base:.3f}")
    print(f"emit() in the generation thread: {micros:.1f} us per event")
    print(
        f"emit -> hub latency over {len(job_latencies)} job events: "
        f"median {statistics.median(job_latencies) * 1000:.1f} ms, "
        f"p95 {job_latencies[int(len(job_latencies) * 0.95)] * 1000:.1f} ms, "
        f"max {job_latencies[-1] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
