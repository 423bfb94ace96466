"""What every benchmark prints about the machine it ran on, and a free port for its servers.

Machines here differ (an AMD EPYC with AVX2 only, a Xeon with AMX): a table means little
without the CPU and the flags that decide torch's speed on it.
"""

import os
import socket
from pathlib import Path

FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")


def cpu_line() -> str:
    """The CPU model, the cores this process may use and the flags of FLAGS it has."""
    model, flags = "unknown", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    present = " ".join(flag for flag in FLAGS if flag in flags) or "none of " + " ".join(FLAGS)
    return f"CPU: {model} x {len(os.sched_getaffinity(0))}; flags: {present}"


def peak_rss_gib() -> float:
    """This process's peak resident memory (VmHWM), in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
