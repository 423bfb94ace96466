"""What pushing one new image to N open tabs costs the web tier: the baseline vs this tree.

Two versions of the app side by side in one run, on the same folder of PAIRS PNG+JSON pairs
(made once by bench/gallery.py's helpers and cached under --keep): the baseline (commit
BASE_COMMIT, checked out as a git worktree under --base-dir, made if absent) and the working
tree this file is in, both run with this tree's .venv as a user runs the backend
(`reflex run --env prod --backend-only`, embedded mode: no AMQP_URL; SD_MODEL points at no
folder, so the embedded worker gives up at once instead of loading torch during the
measurement). The baseline runs from its worktree with PYTHONPATH on it; which code each server
imports is checked (`sd_webui.__file__` under that environment, and every server process's
cwd).

For each N in --clients and each version: start the app, connect N lightweight Reflex tabs
(bench/reflex_clients.py: one asyncio process, raw websockets), wait until every tab has the
gallery (a frame naming the newest image), then until the server is quiet (connecting leaves
it busy for seconds more), settle SETTLE_S, then land --images new images one at a time,
--interval apart: `<stem>.json`, then the PNG as `.<stem>-1.png.tmp` renamed to
`<stem>-1.png` (time.time() taken just before the rename). A new image has reached a tab when
the first frame naming it arrives (any frame format: the whole 24 cards, or just the new one).
Measured:
  p50 / p95   arrival - rename, over every (image, tab) pair, in ms
  CPU         the server's CPU (utime+stime, children included, of the reflex process and all
              its descendants, from /proc) over the burst, per new image, and per image per tab
  idle        the server's CPU while the N tabs sat idle during the settle, in ms per second
              (3 s of 10 ms ticks: a resolution of 3.3 ms/s)
  bytes       websocket payload bytes the tabs received during the burst, per image per tab
  RSS         VmRSS of the server's processes, once the tabs are connected / after the burst
  client      this process's own CPU over the burst per image (the tabs share the 2 cores)
  all         whether every tab got every image (and no tab failed)
Ratio rows give current / baseline per N. The order of the two versions alternates from one N
to the next, to spread a shared machine's drift over both.

Browser section (--browser, on by default): per version the app with its page
(`reflex run --env prod --single-port`, which builds the page first), TABS headless Chromium
tabs (each in its own browser context, hence its own renderer process) and CDP
Performance.getMetrics around a burst: TaskDuration and ScriptDuration per tab per new image,
and whether each tab shows every new image (an img whose data-name is the PNG's name). Building
the page writes `.web` in each version's folder, as `reflex run` always does.

Run (about 4.5 minutes on 2 cores; making the 100,000 pairs the first time adds about 15 s):
    .venv/bin/python bench/push.py
    .venv/bin/python bench/push.py --clients 10 --images 5 --no-browser   # a quick look
Flags: --clients 10 100 500, --images 15, --interval 1.0, --pairs 100000, --keep DIR,
--versions baseline current, --base-dir /tmp/sd-base, --no-browser, --logs DIR.
"""

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gallery import PNG, SIDECAR, fill, write
from machine import cpu_line, free_port
from reflex_clients import ClientPool

if TYPE_CHECKING:  # imported when used: --no-browser runs without Playwright
    from playwright.async_api import Browser, CDPSession, Page

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
BASE_COMMIT = "497696a"
PAIRS = 100_000
# Idle tabs before the burst; the idle CPU is measured over it. 3 s: the baseline's tabs each
# poll the queue figures every 3 s (QueueState.follow), all in step, so a shorter window sees
# one wake-up of N loops or none.
SETTLE_S = 3.0
# Quiet: under 0.2 of a core in 5 windows of 0.5 s in a row. Connecting 100 tabs is followed,
# 1.3 s after the last gallery frame, by about 0.6 s of CPU in granian's worker with no frame
# sent (500 tabs: 2.5 s); shorter quiet spells before it must not count.
QUIET_WINDOW_S, QUIET_WINDOWS, QUIET_SHARE, QUIET_MAX_S = 0.5, 5, 0.2, 30.0
TAIL_S = 0.5  # after the last image reached every tab: trailing work still counts
START_TIMEOUT_S = 300
TABS = 2
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
NO_MODEL = "/nonexistent/sd-webui-bench-model"  # the embedded worker fails fast: no torch
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A version could not be measured (it did not start, tabs failed, ...)."""


@dataclass(frozen=True)
class Version:
    """One version of the app: a label and the project folder it runs from."""

    label: str
    root: Path


# --- the machine ---------------------------------------------------------------------------


def raise_open_files_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (500 sockets here and 500 in the server)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- the server's processes (from /proc) ---------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and all its living descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of these processes (every thread), plus their reaped children's."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / CLOCK_TICKS


def rss_bytes(pids: list[int]) -> int:
    """Sum of VmRSS of these processes."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


# --- the versions --------------------------------------------------------------------------


def git(*args: str, cwd: Path = ROOT) -> str:
    """A read-only git command's output (no optional locks: not even the index is refreshed)."""
    result = subprocess.run(
        ["git", "--no-optional-locks", "-C", str(cwd), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def baseline_worktree(folder: Path, commit: str) -> Path:
    """The baseline's checkout: `git worktree add` once, then reused (checked to be `commit`)."""
    if not (folder / ".git").exists():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), commit],
            check=True,
            capture_output=True,
        )
    head, wanted = git("rev-parse", "HEAD", cwd=folder), git("rev-parse", commit)
    if head != wanted:
        raise SystemExit(f"{folder} is at {head[:12]}, not {commit}: remove it or pass --base-dir")
    return folder


def describe(version: Version) -> str:
    """Its commit, and how many files differ from it."""
    head = git("rev-parse", "--short", "HEAD", cwd=version.root)
    changed = git("status", "--porcelain", "--untracked-files=no", cwd=version.root)
    count = len(changed.splitlines())
    return f"{version.label}: {version.root} at {head}" + (
        f" + uncommitted changes in {count} tracked files" if count else ""
    )


def app_environment(version: Version, folder: Path) -> dict[str, str]:
    """The environment of `reflex run`, as tests/app_process.py sets it, for one version."""
    environment = {
        **os.environ,
        "REFLEX_USE_SYSTEM_BUN": "1",
        "REFLEX_TELEMETRY_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "IMAGES_DIR": str(folder),
        "SD_MODEL": NO_MODEL,
        "PYTHONPATH": str(version.root),  # before the editable install of /work/main
    }
    environment.pop("AMQP_URL", None)
    environment.pop("REDIS_URL", None)  # tabs' states in memory, in both versions
    return environment


def check_imports(version: Version, folder: Path) -> Path:
    """`sd_webui` and `rxconfig` resolve inside the version's folder under its environment;
    returns sd_webui's __init__.py."""
    probe = "import rxconfig, sd_webui; print(sd_webui.__file__); print(rxconfig.__file__)"
    result = subprocess.run(
        [str(VENV / "bin/python"), "-c", probe],
        cwd=version.root,
        env=app_environment(version, folder),
        capture_output=True,
        text=True,
    )
    paths = [Path(path) for path in result.stdout.split()]
    if result.returncode or not paths or not all(p.is_relative_to(version.root) for p in paths):
        raise BenchError(f"{version.label} would import {paths or result.stderr[-500:]}")
    return paths[0]


def answers(url: str) -> bool:
    """Whether GET `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@dataclass
class App:
    """A running `reflex run`: its port, main pid and log."""

    port: int
    pid: int
    log: Path

    @property
    def url(self) -> str:
        """The backend's (and with the page, the page's) base URL."""
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        """The reflex process and its descendants now."""
        return process_tree(self.pid)


def log_tail(path: Path, chars: int = 3000) -> str:
    """The end of a log, for error messages."""
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


@contextlib.contextmanager
def app_process(version: Version, folder: Path, log: Path, *, page: bool) -> Iterator[App]:
    """The app of `version` on `folder`, backend only or with its page (`page`), until /readyz
    (and the page) answer; stopped afterwards (its whole process group)."""
    check_imports(version, folder)
    port = free_port()
    mode = ["--single-port", "--frontend-port"] if page else ["--backend-only", "--backend-port"]
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(VENV / "bin/reflex"), "run", "--env", "prod", *mode, str(port)],
            cwd=version.root,
            env=app_environment(version, folder),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    app = App(port, process.pid, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (answers(f"{app.url}/readyz") and (not page or answers(app.url))):
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{version.label} did not start; log {log}:\n{log_tail(log)}")
            time.sleep(0.5)
        elsewhere = [p for p in app.pids() if Path(f"/proc/{p}/cwd").resolve() != version.root]
        if elsewhere:
            raise BenchError(f"{version.label}: processes {elsewhere} run outside {version.root}")
        yield app
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# --- the folder and the new images ---------------------------------------------------------


def newest_image(folder: Path) -> str:
    """The name of the newest final PNG (by mtime, then name), as the gallery ranks them."""
    newest: tuple[int, str] = (-1, "")
    with os.scandir(folder) as listing:
        for item in listing:
            name = item.name
            if name.endswith(".png") and not name.startswith("."):
                newest = max(newest, (item.stat(follow_symlinks=False).st_mtime_ns, name))
    return newest[1]


def new_stems(count: int) -> list[str]:
    """Names for this run's new jobs (unique, so a frame naming one is about that one)."""
    run = uuid.uuid4().hex[:20]
    return [f"push{run}{index:04d}" for index in range(count)]


def land(folder: Path, stem: str) -> tuple[str, float]:
    """One finished job as a worker leaves it: the sidecar, then the PNG renamed into place.
    Returns the PNG's name and time.time() just before the rename."""
    now = time.time()
    write(folder / f"{stem}.json", SIDECAR, now)
    temporary = folder / f".{stem}-1.png.tmp"
    write(temporary, PNG, now)
    name = f"{stem}-1.png"
    renamed_at = time.time()
    os.rename(temporary, folder / name)
    return name, renamed_at


def remove_landed(folder: Path) -> None:
    """Delete every file a run of this benchmark landed (also those of an interrupted run)."""
    for name in os.listdir(folder):
        if name.startswith(("push", ".push")):
            (folder / name).unlink(missing_ok=True)


async def burst(folder: Path, stems: list[str], interval_s: float) -> list[tuple[str, float]]:
    """Land the images one at a time, `interval_s` apart."""
    landed = []
    for index, stem in enumerate(stems):
        if index:
            await asyncio.sleep(interval_s)
        landed.append(land(folder, stem))
    return landed


# --- one measurement with N lightweight tabs -----------------------------------------------


@dataclass
class PushResult:
    """One (N, version) row."""

    p50_ms: float
    p95_ms: float
    cpu_ms_per_image: float
    cpu_us_per_image_per_tab: float
    idle_ms_per_s: float
    bytes_per_image_per_tab: float
    rss_connected_mb: float
    rss_after_mb: float
    client_ms_per_image: float
    received: int
    expected: int
    failed_tabs: list[str] = field(default_factory=list)
    connected_s: float = 0.0  # from the first connection to every tab having the gallery
    quiet_s: float = 0.0  # then until the server was quiet
    processes: int = 0  # of the server (reflex's CLI and granian's worker)


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


async def measure_push(
    version: Version, folder: Path, tabs: int, images: int, interval_s: float, logs: Path
) -> PushResult:
    """Start the app, connect `tabs` tabs, land `images` images; see the module docstring."""
    newest, stems = newest_image(folder), new_stems(images)
    names = tuple(f"{stem}-1.png" for stem in stems)
    log = logs / f"{version.label}-{tabs}.log"
    try:
        with app_process(version, folder, log, page=False) as app:
            pool = ClientPool("127.0.0.1", app.port, tabs, watch=(newest, *names))
            try:
                return await _measure(app, pool, folder, newest, stems, interval_s)
            finally:
                await pool.stop()
    finally:
        remove_landed(folder)


async def _measure(
    app: App, pool: ClientPool, folder: Path, newest: str, stems: list[str], interval_s: float
) -> PushResult:
    """Connect, wait for the gallery and for quiet, settle, burst, and compute the row."""
    tabs, images = len(pool.clients), len(stems)
    connecting = time.monotonic()
    await pool.start()
    missing = await pool.wait_for(newest, timeout_s=60 + 0.3 * tabs)
    if missing:
        errors = pool.errors() or ["no error; the gallery did not come"]
        raise BenchError(f"{len(missing)} of {tabs} tabs never got the gallery: {errors[:3]}")
    connected_s = time.monotonic() - connecting
    # Connecting leaves the server busy for a few seconds after the last gallery frame (see
    # QUIET_WINDOW_S): the idle figure and the burst start once it is quiet.
    quiet_s = await until_quiet(app)
    idle_from = cpu_seconds(app.pids())
    await asyncio.sleep(SETTLE_S)
    pids = app.pids()
    idle_cpu = cpu_seconds(pids) - idle_from
    rss_connected = rss_bytes(pids)

    cpu_before, client_before, started = cpu_seconds(pids), time.process_time(), time.time()
    landed = await burst(folder, stems, interval_s)
    deadline = time.monotonic() + max(20.0, 0.1 * tabs)  # for them all: a lost image costs once
    for name, _ in landed:
        await pool.wait_for(name, timeout_s=max(0.0, deadline - time.monotonic()))
    await asyncio.sleep(TAIL_S)
    pids = app.pids()
    cpu = cpu_seconds(pids) - cpu_before
    client_cpu, ended = time.process_time() - client_before, time.time()
    rss_after = rss_bytes(pids)

    latencies = [
        client.arrivals[name] - renamed_at
        for name, renamed_at in landed
        for client in pool.clients
        if name in client.arrivals
    ]
    received_bytes = sum(client.bytes_between(started, ended) for client in pool.clients)
    return PushResult(
        p50_ms=percentile(latencies, 0.50) * 1e3 if latencies else float("nan"),
        p95_ms=percentile(latencies, 0.95) * 1e3 if latencies else float("nan"),
        cpu_ms_per_image=cpu / images * 1e3,
        cpu_us_per_image_per_tab=cpu / images / tabs * 1e6,
        idle_ms_per_s=idle_cpu / SETTLE_S * 1e3,
        bytes_per_image_per_tab=received_bytes / images / tabs,
        rss_connected_mb=rss_connected / 2**20,
        rss_after_mb=rss_after / 2**20,
        client_ms_per_image=client_cpu / images * 1e3,
        received=len(latencies),
        expected=images * tabs,
        failed_tabs=pool.errors(),
        connected_s=connected_s,
        quiet_s=quiet_s,
        processes=len(pids),
    )


async def until_quiet(app: App) -> float:
    """Wait until the server used under QUIET_SHARE of a core in each of QUIET_WINDOWS
    windows of QUIET_WINDOW_S in a row (at most QUIET_MAX_S); returns the seconds waited."""
    started = time.monotonic()
    last, quiet_windows = cpu_seconds(app.pids()), 0
    while quiet_windows < QUIET_WINDOWS and time.monotonic() - started < QUIET_MAX_S:
        await asyncio.sleep(QUIET_WINDOW_S)
        now = cpu_seconds(app.pids())
        quiet_windows = quiet_windows + 1 if now - last < QUIET_SHARE * QUIET_WINDOW_S else 0
        last = now
    return time.monotonic() - started


# --- the browser section -------------------------------------------------------------------


@dataclass
class BrowserResult:
    """Per version: renderer main-thread time per tab per new image, and what the tabs show."""

    task_ms: float
    script_ms: float
    idle_task_ms_per_s: float  # TaskDuration while the tabs sat idle before the burst
    shown: int
    expected: int


async def measure_browser(
    version: Version, folder: Path, images: int, interval_s: float, logs: Path
) -> BrowserResult:
    """The app with its page, TABS Chromium tabs, CDP metrics around a burst."""
    from playwright.async_api import async_playwright

    newest, stems = newest_image(folder), new_stems(images)
    names = [f"{stem}-1.png" for stem in stems]
    try:
        with app_process(version, folder, logs / f"{version.label}-page.log", page=True) as app:
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS
                )
                try:
                    return await _measure_tabs(browser, app, folder, newest, names, interval_s)
                finally:
                    await browser.close()
    finally:
        remove_landed(folder)


async def _measure_tabs(
    browser: "Browser", app: App, folder: Path, newest: str, names: list[str], interval_s: float
) -> BrowserResult:
    """Open the tabs, wait for the gallery, settle, burst, then read the metrics and the DOM."""
    pages: list[Page] = []
    sessions: list[CDPSession] = []
    for _ in range(TABS):  # one context each: never one renderer for two tabs
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        await page.goto(app.url)
        await page.wait_for_selector(f'img[data-name="{newest}"]', state="attached", timeout=60_000)
        session = await context.new_cdp_session(page)
        await session.send("Performance.enable")
        pages.append(page)
        sessions.append(session)

    async def metrics() -> list[dict[str, float]]:
        answers = [await session.send("Performance.getMetrics") for session in sessions]
        return [{m["name"]: m["value"] for m in answer["metrics"]} for answer in answers]

    idle_from = await metrics()
    await asyncio.sleep(SETTLE_S)
    before = await metrics()
    await burst(folder, [name.removesuffix("-1.png") for name in names], interval_s)
    await asyncio.sleep(max(1.0, interval_s) + TAIL_S)  # no polling of the page meanwhile
    after = await metrics()
    shown = 0
    for page in pages:
        present = await page.locator("img[data-name]").evaluate_all(
            "images => images.map(image => image.dataset.name)"
        )
        shown += len(set(names) & set(present))

    def mean_delta(key: str, start: list[dict[str, float]], end: list[dict[str, float]]) -> float:
        pairs = zip(start, end, strict=True)
        return statistics.mean(later[key] - earlier[key] for earlier, later in pairs)

    return BrowserResult(
        task_ms=mean_delta("TaskDuration", before, after) / len(names) * 1e3,
        script_ms=mean_delta("ScriptDuration", before, after) / len(names) * 1e3,
        idle_task_ms_per_s=mean_delta("TaskDuration", idle_from, before) / SETTLE_S * 1e3,
        shown=shown,
        expected=len(names) * TABS,
    )


# --- the report ----------------------------------------------------------------------------


def ratio(new: float, base: float) -> str:
    """`new / base` as "0.42x"."""
    return f"{new / base:.2f}x" if base else "-"


PUSH_HEADER = (
    f"{'N':>4} | {'version':<9} | {'p50 ms':>7} | {'p95 ms':>7} | {'CPU ms/image':>12} | "
    f"{'CPU µs/image/tab':>16} | {'idle ms/s':>9} | {'frame bytes':>11} | "
    f"{'RSS MB conn/after':>17} | {'client ms/img':>13} | all received"
)


def push_row(tabs: int, label: str, result: PushResult) -> str:
    """One version's row of the push table."""
    complete = result.received == result.expected and not result.failed_tabs
    received = "yes" if complete else f"NO ({result.received}/{result.expected})"
    if result.failed_tabs:
        received += f"; failed tabs: {result.failed_tabs[:2]}"
    return (
        f"{tabs:>4} | {label:<9} | {result.p50_ms:>7.1f} | {result.p95_ms:>7.1f} | "
        f"{result.cpu_ms_per_image:>12.1f} | {result.cpu_us_per_image_per_tab:>16.0f} | "
        f"{result.idle_ms_per_s:>9.0f} | {result.bytes_per_image_per_tab:>11.0f} | "
        f"{result.rss_connected_mb:>8.0f}/{result.rss_after_mb:<8.0f} | "
        f"{result.client_ms_per_image:>13.1f} | {received}"
    )


def ratio_row(tabs: int, new: PushResult, base: PushResult) -> str:
    """current / baseline for one N."""
    return (
        f"{tabs:>4} | {'new/base':<9} | {ratio(new.p50_ms, base.p50_ms):>7} | "
        f"{ratio(new.p95_ms, base.p95_ms):>7} | "
        f"{ratio(new.cpu_ms_per_image, base.cpu_ms_per_image):>12} | "
        f"{ratio(new.cpu_us_per_image_per_tab, base.cpu_us_per_image_per_tab):>16} | "
        f"{ratio(new.idle_ms_per_s, base.idle_ms_per_s):>9} | "
        f"{ratio(new.bytes_per_image_per_tab, base.bytes_per_image_per_tab):>11} | "
        f"{ratio(new.rss_after_mb, base.rss_after_mb):>17} | {'':>13} |"
    )


def browser_rows(results: dict[str, BrowserResult | str]) -> list[str]:
    """The browser table: one row per version, then the ratio."""
    lines = [
        f"{'version':<9} | {'TaskDuration ms':>15} | {'ScriptDuration ms':>17} | "
        f"{'idle Task ms/s':>14} | shown"
    ]
    for label, result in results.items():
        if isinstance(result, str):
            lines.append(f"{label:<9} | failed: {result}")
        else:
            lines.append(
                f"{label:<9} | {result.task_ms:>15.2f} | {result.script_ms:>17.2f} | "
                f"{result.idle_task_ms_per_s:>14.2f} | {result.shown}/{result.expected}"
            )
    base, new = results.get("baseline"), results.get("current")
    if isinstance(base, BrowserResult) and isinstance(new, BrowserResult):
        lines.append(
            f"{'new/base':<9} | {ratio(new.task_ms, base.task_ms):>15} | "
            f"{ratio(new.script_ms, base.script_ms):>17} | "
            f"{ratio(new.idle_task_ms_per_s, base.idle_task_ms_per_s):>14} |"
        )
    return lines


def first_line(error: BaseException) -> str:
    """An error's first line, short enough for a table cell."""
    text = str(error).strip() or repr(error)
    return re.sub(r"\s+", " ", text.splitlines()[0])[:160]


# --- main ----------------------------------------------------------------------------------


def parse_arguments() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--images", type=int, default=15, help="new images per burst")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between images")
    parser.add_argument("--pairs", type=int, default=PAIRS, help="PNG+JSON pairs in the folder")
    parser.add_argument(
        "--keep",
        type=Path,
        default=Path(tempfile.gettempdir()) / "sd-webui-bench-push",
        help="where the folder is made once and reused (default: %(default)s)",
    )
    parser.add_argument(
        "--versions", nargs="+", choices=["baseline", "current"], default=["baseline", "current"]
    )
    parser.add_argument("--base-dir", type=Path, default=Path("/tmp/sd-base"))
    parser.add_argument("--base-commit", default=BASE_COMMIT)
    parser.add_argument("--browser", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--logs", type=Path, help="the servers' logs (default: a tmp folder)")
    return parser.parse_args()


async def run(arguments: argparse.Namespace) -> None:
    """Every measurement, then the tables."""
    print(cpu_line())
    print(f"open files limit (soft): {raise_open_files_limit()}")
    versions: list[Version] = []
    for label in arguments.versions:
        if label == "baseline":
            base = baseline_worktree(arguments.base_dir.resolve(), arguments.base_commit)
            versions.append(Version("baseline", base))
        else:
            versions.append(Version("current", ROOT))
    for version in versions:
        try:
            imports = f"imports {check_imports(version, arguments.keep)}"
        except BenchError as error:  # its rows will fail the same way, and say so
            imports = f"NOT importable: {first_line(error)}"
        print(f"{describe(version)}; {imports}")
    logs = arguments.logs or Path(tempfile.mkdtemp(prefix="push-bench-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    folder = arguments.keep / f"pairs-{arguments.pairs}"
    started = time.perf_counter()
    fill(folder, arguments.pairs)
    remove_landed(folder)
    print(
        f"folder {folder} ({arguments.pairs} pairs, ready in {time.perf_counter() - started:.0f}"
        f" s); logs in {logs}; {arguments.images} images {arguments.interval} s apart per row",
        flush=True,
    )

    results: dict[tuple[int, str], PushResult | str] = {}
    for turn, tabs in enumerate(arguments.clients):
        for version in versions if turn % 2 == 0 else versions[::-1]:
            try:
                outcome: PushResult | str = await measure_push(
                    version, folder, tabs, arguments.images, arguments.interval, logs
                )
            except Exception as error:  # reported in the table; the other rows still run
                outcome = first_line(error)
                print(f"  {version.label} with {tabs} tabs failed:", file=sys.stderr)
                traceback.print_exc()
            results[tabs, version.label] = outcome
            if isinstance(outcome, PushResult):
                done = (
                    f"tabs connected in {outcome.connected_s:.1f} s, server quiet "
                    f"{outcome.quiet_s:.1f} s later ({outcome.processes} server processes)"
                )
            else:
                done = "FAILED"
            print(f"  {tabs} tabs, {version.label}: {done}", flush=True)

    browser: dict[str, BrowserResult | str] = {}
    if arguments.browser:
        for version in versions:
            try:
                browser[version.label] = await measure_browser(
                    version, folder, arguments.images, arguments.interval, logs
                )
            except Exception as error:  # reported in the table; the push figures still print
                browser[version.label] = first_line(error)
                print(f"  browser, {version.label} failed:", file=sys.stderr)
                traceback.print_exc()
            done = "FAILED" if isinstance(browser[version.label], str) else "done"
            print(f"  browser, {version.label}: {done}", flush=True)

    print()
    print(f"Push of one new image to N tabs ({arguments.images} images per row)")
    print(PUSH_HEADER)
    print("-" * len(PUSH_HEADER))
    for tabs in arguments.clients:
        for version in versions:
            result = results[tabs, version.label]
            if isinstance(result, str):
                print(f"{tabs:>4} | {version.label:<9} | failed: {result}")
            else:
                print(push_row(tabs, version.label, result))
        base, new = results.get((tabs, "baseline")), results.get((tabs, "current"))
        if isinstance(base, PushResult) and isinstance(new, PushResult):
            print(ratio_row(tabs, new, base))
    if browser:
        print()
        print(f"Browser: {TABS} Chromium tabs, per tab per new image ({arguments.images} images)")
        for line in browser_rows(browser):
            print(line)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


def main() -> None:
    """Run the benchmark from the command line."""
    arguments = parse_arguments()
    if not shutil.which("git"):
        raise SystemExit("git is needed (the baseline is a git worktree)")
    asyncio.run(run(arguments))


if __name__ == "__main__":
    main()
