"""What the HTTP API adds to a job, and what requests waiting in it cost the web app.

The product as it runs: the web app backend (`reflex run --env prod --backend-only`) and two
`sd-worker` processes on the demo model, on RabbitMQ, with a fresh queue, events exchange,
cancel queue and images folder per run (MAX_PENDING_PER_SESSION=1000: every request comes
from one address). Every job is 1 image, 256x256, 1 step.

1. Memory: the RSS of the web app's process tree (sampled every 0.1 s) idle, with FEW and then
   JOBS `POST /sdapi/v1/txt2img` requests waiting (before any worker runs, so none can finish;
   each figure taken once the queue holds all their jobs), while they keep waiting for the
   workers to start, and after they were answered. RSS per extra waiting request =
   (RSS with JOBS waiting - RSS with FEW waiting) / (JOBS - FEW); "flat" is judged here as
   JOBS waiting costing under FLAT_SHARE of the idle app more than FEW (the issue sets no
   number).
2. Latency, ROUNDS rounds, each side by side:
   - straight to the queue: JOBS jobs published at once with aio-pika (persistent, message_id =
     job id, publisher confirms, as the web app publishes them);
   - through the API: JOBS concurrent `txt2img` requests for the same jobs, each on its own
     connection (a minimal asyncio client: see `http`).
   An independent listener (its own exclusive queue on the events exchange) collects each
   job's `started` and `done` events; their times are the worker's own stamps (`at`), so a
   busy listener does not skew them. Per job (wall clock, one machine):
     intake = publish or request sent -> queued: the broker confirmed the job (to the bench; to
              the web app, as its log line `API: ... queued <id>` says, written right after)
     own    = queued -> done: the job's own time, waiting in the queue (at a depth of up to
              JOBS, shared by 2 workers) and running
     after  = done -> answer received (API only): the event's trip to the web app, waking the
              request, reading the PNG and sidecar, base64, JSON and the HTTP answer
     total  = intake + own + after
   API overhead per request = its total minus its job's own time = intake + after, per request
   (no pairing across runs, so the queue's depth and the two runs' throughput cancel out);
   median and p95, GOAL_MS the goal for the median. Straight to the queue the same figure is
   the publish's own intake (publish -> confirm), shown beside it. On two cores the web app
   shares the CPUs with the workers and this client: `run` shows what that costs the jobs.
   For context: the intake of part 1's JOBS - FEW requests (sent while no worker ran, so no
   job competed for the CPUs), and the wall time of JOBS concurrent requests to an empty route
   (`GET /internal/ping`): what the HTTP server and this client cost alone.

Run: `source scripts/reflex-env.sh && python bench/api.py` (about 3 minutes on two cores; needs
RabbitMQ on AMQP_URL, default the local broker; `WORKER_NICE=10` runs the workers at nice 10).
When something fails, the end of each child's log (web app, workers) is printed to stderr.
"""

import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType

import aio_pika
import psutil
from aio_pika.abc import AbstractIncomingMessage
from machine import cpu_line, free_port

from sd_webui.broker import declare_queues, job_message
from sd_webui.demo_model import build_demo_model
from sd_webui.events import FINAL_STATES, JobEvent, declare_events_exchange
from sd_webui.jobs import Job, build_jobs

JOBS = 200
FEW = 20
ROUNDS = 2
WORKERS = 2
WORKER_NICE = int(os.environ.get("WORKER_NICE", "0"))  # see start_workers
GOAL_MS = 50.0
FLAT_SHARE = 0.05  # "flat": JOBS waiting cost under 5% of the idle app more than FEW waiting
REQUEST = {"prompt": "a green dog", "width": 256, "height": 256, "steps": 1}
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 600.0
SETTLE_S = 2.0  # after the queue holds every job: the requests' last allocations, one RSS sample
SAMPLE_S = 0.1
STOP_TIMEOUT_S = 30.0
# The web app's log line for each API request, once the broker confirmed its jobs.
QUEUED_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO sd_webui\.api\.submitting: "
    r"API: .* queued ([0-9a-f ]+)$"
)
# Settings of the caller's environment that would change what is measured.
DROPPED_ENV = ("API_KEYS", "API_KEYS_FILE", "METRICS_PORT", "BATCH_JOBS", "EXIT_AFTER_ONE_TASK")


@dataclass(frozen=True)
class Setup:
    """The names and paths of one run, shared by the web app, the workers and the bench."""

    folder: Path
    model: Path
    images: Path
    queue: str
    exchange: str
    cancels: str
    port: int

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key not in DROPPED_ENV}
        return {
            **env,
            "AMQP_URL": AMQP_URL,
            "QUEUE_NAME": self.queue,
            "EVENTS_EXCHANGE": self.exchange,
            "CANCEL_QUEUE": self.cancels,
            "IMAGES_DIR": str(self.images),
            "SD_MODEL": str(self.model),
            "MAX_PENDING_PER_SESSION": "1000",
            "API_WAIT_S": str(RUN_TIMEOUT_S * 2),
            "HF_HUB_OFFLINE": "1",
            "REFLEX_USE_SYSTEM_BUN": "1",
            "REFLEX_TELEMETRY_ENABLED": "false",
        }


class Processes:
    """The run's child processes, each in its own session with its log in the run's folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.folder / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running[name] = process
        return process

    def check(self) -> None:
        """Raise if a child has exited (with the end of its log)."""
        for name, process in self.running.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{self.tail(name)}")

    def tail(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop_all(self) -> None:
        """SIGTERM to every child's process group, then SIGKILL what is left after a while."""
        for process in self.running.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.running.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.running.clear()


class MemorySampler:
    """The RSS of a process and all its descendants, every SAMPLE_S in a thread."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.samples: list[tuple[float, int]] = []
        self.processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def tree_rss(self) -> int:
        total = 0
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        for process in tree:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        self.processes = len(tree)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.tree_rss()))
            self._stop.wait(SAMPLE_S)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def now(self) -> int:
        return self.tree_rss()

    def peak(self, since: float, until: float | None = None) -> int:
        end = time.time() if until is None else until
        return max((rss for at, rss in self.samples if since <= at <= end), default=0)


class Listener:
    """An observer of the run's job events beside the web app's own: an exclusive queue bound
    to each job's started and final events. Keeps the first `started` and the final event."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.final: dict[str, JobEvent] = {}
        self._changed = asyncio.Event()

    async def start(self, channel: aio_pika.abc.AbstractChannel, exchange_name: str) -> None:
        exchange = await declare_events_exchange(channel, exchange_name)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for state in ("started", *sorted(FINAL_STATES)):
            await queue.bind(exchange, routing_key=f"job.*.{state}")
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        event = JobEvent.model_validate_json(message.body)
        if event.state == "started":
            self.started.setdefault(event.id, event.at.timestamp())
        elif event.final:
            self.final.setdefault(event.id, event)
        self._changed.set()

    async def wait_final(self, ids: list[str]) -> None:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            while not all(job_id in self.final for job_id in ids):
                self._changed.clear()
                await self._changed.wait()


@dataclass(frozen=True)
class Sample:
    """One job's times, seconds since the epoch (see the module's docstring)."""

    sent: float  # the publish began, or the request was sent
    queued: float  # the broker confirmed the job (to the bench, or to the web app)
    started: float  # the worker's `started` event
    done: float  # the worker's `done` event
    answered: float  # the API's answer received (= done straight to the queue)

    @property
    def total(self) -> float:
        return self.answered - self.sent

    @property
    def intake(self) -> float:
        return self.queued - self.sent

    @property
    def own(self) -> float:
        return self.done - self.queued

    @property
    def wait(self) -> float:
        return self.started - self.queued

    @property
    def run(self) -> float:
        return self.done - self.started

    @property
    def after(self) -> float:
        return self.answered - self.done

    @property
    def overhead(self) -> float:
        """The total minus the job's own time: intake + after."""
        return self.total - self.own


@dataclass
class Round:
    samples: list[Sample]
    seconds: float  # the first publish or request to the last done or answer


@dataclass
class Answer:
    sent: float
    answered: float
    status: int
    job_ids: list[str] = field(default_factory=list)
    problem: str | None = None


def queued_times(log: Path) -> dict[str, float]:
    """When the web app queued each job, from its log line after the broker's confirm
    (sd_webui/api/submitting.py). The line's time is local and cut to the millisecond: the
    middle of that millisecond is taken."""
    times: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        if match := QUEUED_LINE.match(line):
            at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp() + 0.0005
            times.update(dict.fromkeys(match[2].split(), at))
    return times


def new_jobs(count: int) -> list[Job]:
    """The jobs `txt2img` makes for REQUEST, each with its own id and random seed."""
    options = {key: value for key, value in REQUEST.items() if key != "prompt"}
    return [build_jobs(str(REQUEST["prompt"]), 1, False, **options)[0] for _ in range(count)]


def quantile(values: list[float], share: float) -> float:
    """Nearest-rank quantile (share 0.5: the median, 0.95: p95)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:9.1f}"


async def queue_state(channel: aio_pika.abc.AbstractChannel, name: str) -> tuple[int, int]:
    """(messages ready, consumers) of a queue."""
    queue = await channel.declare_queue(name, passive=True)
    result = queue.declaration_result
    return result.message_count or 0, result.consumer_count or 0


async def until(condition: Callable[[], Awaitable[bool]], what: str, processes: Processes) -> None:
    """Poll an async `condition` every 0.1 s until it is true; raise after START_TIMEOUT_S."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not await condition():
        processes.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {START_TIMEOUT_S:g} s")
        await asyncio.sleep(0.1)


async def http(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request on a connection of its own (HTTP/1.1, `Connection: close`, read until the
    server closes): the status and the body. Not httpx: at 200 concurrent requests its pool
    costs this client milliseconds of CPU per request (an empty route took a median 230 ms
    with httpx, 60 ms with this), which would be counted as the API's."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    header, _, content = response.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").lower().split("\r\n")
    if "transfer-encoding: chunked" in lines:
        raise RuntimeError(f"{path}: a chunked answer (this client reads plain bodies only)")
    return int(lines[0].split()[1]), content


async def txt2img(port: int) -> Answer:
    sent = time.time()
    status, content = await http(port, "POST", "/sdapi/v1/txt2img", json.dumps(REQUEST).encode())
    answered = time.time()
    if status != 200:
        return Answer(sent, answered, status, problem=content[:300].decode(errors="replace"))
    body = json.loads(content)
    info = json.loads(body["info"])
    answer = Answer(sent, answered, 200, list(info["job_ids"]))
    if len(body["images"]) != 1 or info.get("states") != ["done"]:
        answer.problem = f"{len(body['images'])} images, states {info.get('states')}"
    return answer


def checked(answers: list[Answer]) -> list[Answer]:
    """The answers, after raising on any that is not one done image (that would be a bug)."""
    problems = [f"{a.status}: {a.problem}" for a in answers if a.problem or a.status != 200]
    if problems:
        raise RuntimeError(f"{len(problems)} of {len(answers)} requests failed: {problems[:5]}")
    return answers


async def queue_round(
    channel: aio_pika.abc.AbstractChannel, setup: Setup, listener: Listener
) -> Round:
    """JOBS jobs published straight to the queue at once; each timed publish -> done."""
    jobs = new_jobs(JOBS)
    sent: dict[str, float] = {}
    queued: dict[str, float] = {}

    async def publish(job: Job) -> None:
        sent[job.id] = time.time()
        await channel.default_exchange.publish(job_message(job), routing_key=setup.queue)
        queued[job.id] = time.time()

    first = time.time()
    await asyncio.gather(*(publish(job) for job in jobs))
    ids = [job.id for job in jobs]
    await listener.wait_final(ids)
    samples = [sample_of(listener, job_id, sent[job_id], queued[job_id], None) for job_id in ids]
    return Round(samples, max(s.answered for s in samples) - first)


async def api_round(port: int, listener: Listener, app_log: Path) -> Round:
    """JOBS concurrent txt2img requests; each timed request sent -> answer received."""
    first = time.time()
    answers = checked(await asyncio.gather(*(txt2img(port) for _ in range(JOBS))))
    ids = [answer.job_ids[0] for answer in answers]
    await listener.wait_final(ids)
    await asyncio.sleep(0.5)  # the last log lines
    queued = queued_times(app_log)
    if missing := [job_id for job_id in ids if job_id not in queued]:
        raise RuntimeError(
            f"the web app's log has no 'API: ... queued' line for {len(missing)} jobs "
            f"(e.g. {missing[0]}): QUEUED_LINE no longer matches sd_webui/api/submitting.py"
        )
    samples = [
        sample_of(listener, a.job_ids[0], a.sent, queued[a.job_ids[0]], a.answered) for a in answers
    ]
    return Round(samples, max(a.answered for a in answers) - first)


def sample_of(
    listener: Listener, job_id: str, sent: float, queued: float, answered: float | None
) -> Sample:
    final = listener.final[job_id]
    if final.state != "done":
        raise RuntimeError(f"job {job_id} ended {final.state}: {final.error}")
    done = final.at.timestamp()
    answered = done if answered is None else answered
    return Sample(sent, queued, listener.started[job_id], done, answered)


@dataclass
class Memory:
    idle: int = 0
    few: int = 0
    all: int = 0
    waiting_peak: int = 0
    answering_peak: int = 0
    after: int = 0
    api_rounds_peak: int = 0
    processes: int = 0
    # Context for the intake: the JOBS - FEW requests sent while no worker ran (sent ->
    # queued), and JOBS concurrent requests to an empty route (sent -> answered), seconds.
    intake_no_workers: list[float] = field(default_factory=list)
    empty_route: list[float] = field(default_factory=list)


async def ping(port: int) -> float:
    sent = time.time()
    status, _ = await http(port, "GET", "/internal/ping")
    if status != 200:
        raise RuntimeError(f"/internal/ping answered {status}")
    return time.time() - sent


async def memory_phase(
    setup: Setup,
    channel: aio_pika.abc.AbstractChannel,
    sampler: MemorySampler,
    processes: Processes,
) -> Memory:
    """FEW, then JOBS requests waiting with no worker; then the workers start and answer them."""
    memory = Memory(idle=sampler.now())

    async def queued(count: int) -> bool:
        return (await queue_state(channel, setup.queue))[0] >= count

    tasks = [asyncio.create_task(txt2img(setup.port)) for _ in range(FEW)]
    await until(lambda: queued(FEW), f"{FEW} jobs queued", processes)
    await asyncio.sleep(SETTLE_S)
    memory.few = sampler.now()
    more = [asyncio.create_task(txt2img(setup.port)) for _ in range(JOBS - FEW)]
    tasks += more
    await until(lambda: queued(JOBS), f"{JOBS} jobs queued", processes)
    await asyncio.sleep(SETTLE_S)
    memory.all = sampler.now()
    waiting_since = time.time()
    start_workers(setup, processes)

    async def consumers() -> bool:
        return (await queue_state(channel, setup.queue))[1] >= WORKERS

    await until(consumers, f"{WORKERS} workers consuming", processes)
    answering_since = time.time()
    memory.waiting_peak = sampler.peak(waiting_since, answering_since)
    async with asyncio.timeout(RUN_TIMEOUT_S):
        checked(list(await asyncio.gather(*tasks)))
    memory.answering_peak = sampler.peak(answering_since)
    await asyncio.sleep(SETTLE_S)
    memory.after = sampler.now()
    memory.processes = sampler.processes
    queued_at = queued_times(setup.folder / "web-app.log")
    answers = [task.result() for task in more]
    memory.intake_no_workers = [queued_at[a.job_ids[0]] - a.sent for a in answers]
    memory.empty_route = list(await asyncio.gather(*(ping(setup.port) for _ in range(JOBS))))
    return memory


def start_workers(setup: Setup, processes: Processes) -> None:
    """WORKERS workers, at `nice` WORKER_NICE: where workers have cores of their own (other
    machines, CPU requests under Kubernetes), they do not take the web app's CPU as on 2 shared
    cores; a positive WORKER_NICE approximates that here, for both sides alike."""
    command = [str(BIN / "sd-worker")]
    if WORKER_NICE:
        command = ["nice", "-n", str(WORKER_NICE), *command]
    for number in range(1, WORKERS + 1):
        processes.start(f"worker-{number}", command, setup.env())


async def measure(setup: Setup, processes: Processes) -> tuple[Memory, list[Round], list[Round]]:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        control = await connection.channel()
        await declare_queues(control, setup.queue)
        listener = Listener()
        await listener.start(await connection.channel(), setup.exchange)
        publisher = await connection.channel(publisher_confirms=True)
        app = processes.start(
            "web-app",
            [
                str(BIN / "reflex"),
                "run",
                "--env",
                "prod",
                "--backend-only",
                "--backend-port",
                str(setup.port),
            ],
            setup.env(),
        )

        async def ready() -> bool:
            try:
                return (await http(setup.port, "GET", "/readyz"))[0] == 200
            except OSError:
                return False

        await until(ready, "the web app's /readyz", processes)
        sampler = MemorySampler(app.pid)
        sampler.start()
        try:
            for _ in range(5):  # the HTTP path's first-use allocations
                await http(setup.port, "GET", "/sdapi/v1/sd-models")
            await asyncio.sleep(SETTLE_S)
            memory = await memory_phase(setup, control, sampler, processes)
            queue_rounds: list[Round] = []
            api_rounds: list[Round] = []
            for _ in range(ROUNDS):
                queue_rounds.append(await queue_round(publisher, setup, listener))
                await asyncio.sleep(SETTLE_S)
                since = time.time()
                app_log = setup.folder / "web-app.log"
                api_rounds.append(await api_round(setup.port, listener, app_log))
                memory.api_rounds_peak = max(memory.api_rounds_peak, sampler.peak(since))
                await asyncio.sleep(SETTLE_S)
        finally:
            sampler.stop()
    return memory, queue_rounds, api_rounds


async def delete_broker_objects(setup: Setup) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in (setup.queue, f"{setup.queue}.dead", setup.cancels):
            await channel.queue_delete(name)
        await channel.exchange_delete(setup.exchange)


def report(memory: Memory, queue_rounds: list[Round], api_rounds: list[Round]) -> None:
    mib = 1024 * 1024
    print(cpu_line())
    print(
        f"{JOBS} jobs per round x {ROUNDS} rounds, 1 image 256x256, 1 step, demo model, "
        f"{WORKERS} sd-worker processes (nice {WORKER_NICE}), RabbitMQ; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print(f"web app memory (RSS of its {memory.processes} processes):")
    rows = [
        ("idle", memory.idle),
        (f"{FEW} requests waiting", memory.few),
        (f"{JOBS} requests waiting", memory.all),
        (f"{JOBS} waiting, peak until the workers ran", memory.waiting_peak),
        (f"peak while answering those {JOBS}", memory.answering_peak),
        ("after they were answered", memory.after),
        (f"peak during the {ROUNDS} API rounds", memory.api_rounds_peak),
    ]
    for name, rss in rows:
        print(f"  {name:<44} {rss / mib:8.1f} MiB")
    growth = memory.all - memory.few
    print(
        f"  per extra waiting request ({FEW} -> {JOBS}): {growth / (JOBS - FEW) / 1024:.1f} KiB "
        f"({growth / mib:+.1f} MiB, {growth / memory.idle:+.1%} of idle)"
    )
    print()
    queue_samples = [s for r in queue_rounds for s in r.samples]
    api_samples = [s for r in api_rounds for s in r.samples]
    print(
        f"per job, ms ({ROUNDS} rounds pooled)           {'queue':>9} {'API':>9} {'API-queue':>9}"
    )
    columns: list[tuple[str, Callable[[Sample], float]]] = [
        ("total", lambda s: s.total),
        ("intake (sent -> queued)", lambda s: s.intake),
        ("own (queued -> done)", lambda s: s.own),
        ("  wait (queued -> started)", lambda s: s.wait),
        ("  run (started -> done)", lambda s: s.run),
        ("after (done -> answer)", lambda s: s.after),
        ("overhead (intake + after)", lambda s: s.overhead),
    ]
    for name, value in columns:
        for label, share in (("median", 0.5), ("p95", 0.95)):
            base = quantile([value(s) for s in queue_samples], share)
            api = quantile([value(s) for s in api_samples], share)
            print(f"  {name + ' ' + label:<42} {ms(base)} {ms(api)} {ms(api - base)}")
    queue_s = [round(r.seconds, 2) for r in queue_rounds]
    api_s = [round(r.seconds, 2) for r in api_rounds]
    print(f"  seconds for all {JOBS} jobs, per round: queue {queue_s}, API {api_s}")
    for name, values in (
        (f"intake of {JOBS - FEW} requests sent while no worker ran", memory.intake_no_workers),
        (f"{JOBS} concurrent GET /internal/ping (empty route), wall", memory.empty_route),
    ):
        print(
            f"  {name}: median {quantile(values, 0.5) * 1000:.1f} ms, "
            f"p95 {quantile(values, 0.95) * 1000:.1f} ms"
        )
    print()
    overheads = [s.overhead for s in api_samples]
    per_round = [statistics.median(s.overhead for s in r.samples) for r in api_rounds]
    median = quantile(overheads, 0.5)
    print("API overhead per request (its wall time - its job's own time, queued -> done):")
    print(
        f"  median {median * 1000:.1f} ms, p95 {quantile(overheads, 0.95) * 1000:.1f} ms "
        f"(median per round: {', '.join(f'{m * 1000:.1f}' for m in per_round)} ms)"
    )
    verdict = "PASS" if median * 1000 < GOAL_MS else "FAIL"
    print(f"goal: median overhead under {GOAL_MS:g} ms: {verdict} ({median * 1000:.1f} ms)")
    flat = growth < FLAT_SHARE * memory.idle
    print(
        f"goal: memory flat in the number waiting: {'PASS' if flat else 'FAIL'} "
        f"({growth / (JOBS - FEW) / 1024:.1f} KiB per waiting request; criterion used here: "
        f"{JOBS} waiting cost under {FLAT_SHARE:.0%} of the idle app more than {FEW})"
    )


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    suffix = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="bench-api-") as folder:
        setup = Setup(
            folder=Path(folder),
            model=build_demo_model(Path(folder) / "model"),
            images=Path(folder) / "images",
            queue=f"bench-api-{suffix}",
            exchange=f"bench-api-events-{suffix}",
            cancels=f"bench-api-cancels-{suffix}",
            port=free_port(),
        )
        setup.images.mkdir()
        processes = Processes(setup.folder)
        try:
            memory, queue_rounds, api_rounds = asyncio.run(measure(setup, processes))
        except BaseException:
            for name in processes.running:
                print(f"--- {name} log (end) ---\n{processes.tail(name)}", file=sys.stderr)
            raise
        finally:
            processes.stop_all()
            asyncio.run(delete_broker_objects(setup))
    report(memory, queue_rounds, api_rounds)


if __name__ == "__main__":
    main()
