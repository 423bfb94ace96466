"""The web tier's Redis: compose.yaml's and deploy/k8s's run the same server, and Debian's
redis-server takes its options as written, with `redis-cli ping` (both healthchecks) answering.
"""

import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from manifests import REPO, build, container, find, pod_template, system_tool


def compose_command() -> list[str]:
    return yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["redis"]["command"]


def test_compose_and_kubernetes_run_the_same_redis() -> None:
    spec = pod_template(find(build("base"), "StatefulSet", "redis"))["spec"]
    redis = container(spec, "redis")
    assert "command" not in redis  # the image's entrypoint, as compose runs it
    assert redis["args"] == compose_command()
    image = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["redis"]["image"]
    assert redis["image"] == image
    # The memory cap stays under the container's limit.
    options = dict(zip(redis["args"][1::2], redis["args"][2::2], strict=True))
    assert options["--maxmemory"].endswith("mb")
    limit = redis["resources"]["limits"]["memory"]
    assert limit.endswith("Mi") and int(options["--maxmemory"][:-2]) < int(limit[:-2])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(port: int, *args: str) -> list[str]:
    """redis-cli's answer, one line per element (an empty string is an empty line)."""
    result = subprocess.run(
        [system_tool("redis-cli", "redis-tools"), "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_redis_server_runs_the_command_as_written(tmp_path: Path) -> None:
    server = system_tool("redis-server", "redis-server")
    command = compose_command()
    assert command[0] == "redis-server"
    port = free_port()
    # Later options win: only the address changes, to one this test may take.
    process = subprocess.Popen(
        [server, *command[1:], "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                pytest.fail(process.stdout.read())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not listen"
                time.sleep(0.1)
        assert cli(port, "ping") == ["PONG"]
        assert cli(port, "config", "get", "save") == ["save", ""]
        assert cli(port, "config", "get", "appendonly") == ["appendonly", "no"]
        policy = cli(port, "config", "get", "maxmemory-policy")
        assert policy == ["maxmemory-policy", "volatile-lru"]
        options = dict(zip(command[1::2], command[2::2], strict=True))
        megabytes = int(options["--maxmemory"].removesuffix("mb"))
        assert cli(port, "config", "get", "maxmemory") == ["maxmemory", str(megabytes * 1024**2)]
        assert cli(port, "set", "probe", "1") == ["OK"]
        cli(port, "shutdown")  # as `docker stop` would: a save here would write dump.rdb
        process.wait(timeout=15)
        assert not list(tmp_path.iterdir())  # nothing written to disk
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=15)
        process.stdout.close()
