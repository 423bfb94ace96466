"""The web app as a child process, as a user runs it (`reflex run --env prod`, or the
README's `make` targets)."""

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, unavailable

ROOT = Path(__file__).resolve().parents[1]
APP_START_TIMEOUT_S = 300


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@dataclass(frozen=True)
class WebApp:
    url: str
    process: subprocess.Popen

    def kill(self) -> None:
        """SIGKILL the whole app at once, as a lost machine or an OOM kill would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextmanager
def web_app(
    log_path: Path,
    *,
    backend_only: bool = False,
    make_target: str | None = None,
    ready: str = "/readyz",
    **env: str,
) -> Iterator[str]:
    """The web app in production mode on a free port; yields its URL once `ready` answers 200,
    stops it afterwards.

    `backend_only`: the backend alone (the API, images and probes; no page), which starts in
    seconds instead of building the page first. `make_target`: started the way the README
    tells a newcomer, `make <target> PORT=<port>` (which installs what it needs first).
    `ready="/healthz"`: as soon as it answers, to watch it become ready.
    """
    with web_app_process(
        log_path, backend_only=backend_only, make_target=make_target, ready=ready, **env
    ) as app:
        yield app.url


def app_command(port: int, backend_only: bool, make_target: str | None) -> list[str]:
    if make_target is not None:
        return ["make", make_target, f"PORT={port}"]
    if backend_only:
        mode = ["--backend-only", "--backend-port"]
    else:
        mode = ["--single-port", "--frontend-port"]
    return [str(ROOT / ".venv/bin/reflex"), "run", "--env", "prod", *mode, str(port)]


@contextmanager
def web_app_process(
    log_path: Path,
    *,
    backend_only: bool = False,
    make_target: str | None = None,
    ready: str = "/readyz",
    **env: str,
) -> Iterator[WebApp]:
    """`web_app`, yielding the process too."""
    if not backend_only and not shutil.which("bun"):
        unavailable("bun is not installed (scripts/setup.sh installs it)")
    port = free_port()
    environment = {
        **os.environ,
        "REFLEX_USE_SYSTEM_BUN": "1",
        "REFLEX_TELEMETRY_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        **env,
    }
    if "AMQP_URL" not in env:
        environment.pop("AMQP_URL", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            app_command(port, backend_only, make_target),
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + APP_START_TIMEOUT_S
            while not (_answers(f"{url}{ready}") and (backend_only or _answers(url))):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the web app did not start; log:\n{log_path.read_text()[-4000:]}")
                time.sleep(1)
            yield WebApp(url, process)
        finally:
            with contextlib.suppress(ProcessLookupError):  # killed by the test already
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
