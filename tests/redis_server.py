"""A redis-server of a test's own on a free port, which the test may stop and start again
(the shared Redis on 6379 stays up for everyone else)."""

import shutil
import subprocess
from pathlib import Path

from tests.conftest import free_port, unavailable, wait_listening

START_TIMEOUT_S = 10.0


class RedisServer:
    def __init__(self, folder: Path) -> None:
        if not shutil.which("redis-server"):
            unavailable("redis-server is not installed")
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it empty (nothing is saved), once it accepts connections."""
        command = [
            "redis-server",
            "--port",
            str(self.port),
            "--save",
            "",
            "--dir",
            str(self.folder),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_listening(self.process, self.port, "redis-server", START_TIMEOUT_S)

    def stop(self) -> None:
        if self.process is None:
            return
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], check=False)
        self.process.wait(10)
        self.process = None
