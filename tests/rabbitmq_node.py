"""A RabbitMQ node of the tests' own, for the tests that stop and start a real broker.

The shared broker on 127.0.0.1:5672 serves every other test (and whatever else runs on the
machine), so stopping it is not an option: this node has its own name, ports, data, logs, config
and Erlang cookie, all under one temporary folder. Only epmd (the Erlang name server) is shared."""

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, unavailable

# Debian's /usr/sbin/rabbitmq-* wrappers `su rabbitmq` when run as root: they would drop our
# environment's HOME and write the shared node's /var/log/rabbitmq/startup_log. The scripts they
# wrap run as whoever calls them and take the environment as given.
DEBIAN_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT = 60.0  # a cold boot takes 3.5 to 7 s here
STOP_TIMEOUT = 30.0


def _script(name: str) -> str | None:
    """The real rabbitmq-server / rabbitmqctl script: Debian's inner one, else the one on PATH."""
    inner = DEBIAN_SCRIPTS / name
    return str(inner) if inner.exists() else shutil.which(name)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


class RabbitNode:
    """A RabbitMQ node of the tests' own, on free ports, its data in a temporary folder."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.name = f"sdtest-{secrets.token_hex(4)}@localhost"  # short name, as the shared node's
        self.port = free_port()
        self.dist_port = free_port()
        while self.dist_port == self.port:
            self.dist_port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.server: subprocess.Popen[bytes] | None = None
        self.pid_file = base / "rabbitmq.pid"
        base.mkdir(parents=True, exist_ok=True)
        # Written before anything starts: node and CLI would otherwise race to create it.
        cookie = base / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        (base / "enabled_plugins").write_text("[].\n")  # no management/prometheus on 15672/15692
        (base / "conf.d").mkdir(exist_ok=True)  # instead of /etc/rabbitmq/conf.d
        (base / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        # Replaces /etc/rabbitmq/rabbitmq-env.conf, which names the shared node.
        (base / "rabbitmq-env.conf").write_text("ERL_EPMD_ADDRESS=127.0.0.1\n")
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        self.env = inherited | {
            "HOME": str(base),  # the CLI and the node read the cookie from $HOME
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_CONFIG_FILES": str(base / "conf.d"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_CRASH_DUMP": str(base / "erl_crash.dump"),
        }

    def _died(self) -> bool:
        return self.server is not None and self.server.poll() is not None

    def _ctl(self, *args: str, timeout: float = STOP_TIMEOUT) -> subprocess.CompletedProcess[str]:
        ctl = _script("rabbitmqctl") or "rabbitmqctl"
        command = [ctl, "-n", self.name, "--timeout", str(int(timeout)), *args]
        # The CLI's own --timeout comes first, so that a slow node gives its message, not ours.
        return subprocess.run(
            command,
            env=self.env,
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=timeout + 9,
        )

    def _fail(self, what: str, output: str = "") -> RuntimeError:
        """The node's console (its log, and the errors from before logging is set up)."""
        console = self.base / "console.log"
        lines = console.read_text(errors="replace").splitlines() if console.exists() else []
        tail = "\n".join(lines[-40:])
        return RuntimeError(f"RabbitMQ node {self.name}: {what}\n{output}\n--- console ---\n{tail}")

    def _check(self, *args: str) -> None:
        result = self._ctl(*args)
        if result.returncode != 0:
            raise self._fail(f"rabbitmqctl {' '.join(args)} failed", result.stdout + result.stderr)

    def start(self) -> None:
        """Boot the node in a session of its own; return once AMQP accepts and the broker says
        it has booted. Not `-detached`: as our child its console goes to a file (errors before
        logging starts are otherwise lost), an early death shows at once, and we reap it."""
        server = _script("rabbitmq-server") or "rabbitmq-server"
        with (self.base / "console.log").open("ab") as console:
            self.server = subprocess.Popen(
                [server],
                env=self.env,
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no Ctrl-C from the terminal; one group to kill
            )
        deadline = time.monotonic() + START_TIMEOUT
        if not _wait(lambda: _port_open(self.port) or self._died(), START_TIMEOUT):
            raise self._fail(f"port {self.port} still closed after {START_TIMEOUT:.0f} s")
        if self._died():
            raise self._fail("the node exited while booting")
        result = self._ctl("await_startup", timeout=max(deadline - time.monotonic(), 5))
        if result.returncode != 0:
            raise self._fail("await_startup failed", result.stdout + result.stderr)

    def stop_app(self) -> None:
        """Stop the broker (the Erlang VM stays up): clients see it go away."""
        self._check("stop_app")
        if not _wait(lambda: not _port_open(self.port), STOP_TIMEOUT):
            raise self._fail(f"port {self.port} still open after stop_app")

    def start_app(self) -> None:
        """Start the broker again, with the durable queues and persistent messages it had."""
        self._check("start_app")
        if not _wait(lambda: _port_open(self.port), START_TIMEOUT):
            raise self._fail(f"port {self.port} still closed after start_app")

    def shutdown(self) -> None:
        """Stop the whole node and wait until it has exited (killed if need be); never raises,
        so that a teardown always runs to the end."""
        if self.server is None:
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self._ctl("stop")
        try:
            self.server.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(self.server.pid, signal.SIGKILL)  # the script and its VM
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.server.wait(5)


@pytest.fixture(scope="session")
def rabbit_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """One private node for the session, shut down at its end."""
    if _script("rabbitmq-server") is None or _script("rabbitmqctl") is None:
        unavailable("rabbitmq-server is not installed")
    node = RabbitNode(tmp_path_factory.mktemp("rabbit-node"))
    try:
        node.start()
        yield node
    finally:
        node.shutdown()
