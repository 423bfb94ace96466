"""Peak memory of a CPU worker per job shape: what the Kubernetes worker's memory rests on.

The worker's own generation path (`prepare_pipeline` with default settings: fp32, the SD VAE
decoder taking a job's images one by one; then `LoadedModel.generate`) on the sd-turbo
architecture with random weights (bench/sd_turbo_arch.py), tcmalloc preloaded as in the
container image; for jobs of several images also with the whole batch decoded at once (the
baseline: diffusers' default), side by side. Each shape runs in a fresh process, so its peak RSS
(VmHWM: weights, activations and what the allocator keeps) is its own. Memory depends on the
batch (count x width x height), not on the steps, so every shape runs 1 step; the largest
batches the Kubernetes manifests' MAX_JOB_UNITS (32) admits are 4 x 512x512 (16 units at 1
step, 32 at 5, the same memory) and 2 x 1024x1024 (32 units at 1 step).

Run: `python bench/job_memory.py` (about 17 minutes on two EPYC cores; `--shapes 4x512` for one).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_line, peak_rss_gib

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
SHAPES = ("1x512", "4x512", "1x1024", "2x1024")


def child(shape: str, whole_batch: bool) -> None:
    """Build the model, prepare it as the worker does, generate one job of `shape`; print one
    JSON line. `whole_batch`: decode the batch in one call, as the worker did before."""
    import torch
    from sd_turbo_arch import build_sd_turbo

    from sd_webui.jobs import Job, job_units
    from sd_webui.settings import Settings
    from sd_webui.worker.optimize import prepare_pipeline
    from sd_webui.worker.pipeline import LoadedModel

    count, side = (int(part) for part in shape.split("x"))
    job = Job(prompt="a photo of a green dog in the snow", count=count, width=side, height=side)
    pipe = build_sd_turbo(torch.float32)
    prepare_pipeline(pipe, Settings(), "cpu", torch.float32)
    if whole_batch:
        pipe.vae.disable_slicing()
    model = LoadedModel(pipe, "sd-turbo-arch", "cpu", {})
    loaded_gb = peak_rss_gib()
    started = time.monotonic()
    model.generate(job)
    seconds = time.monotonic() - started
    row = {"shape": shape, "units": job_units(job), "seconds": seconds}
    print(json.dumps(row | {"loaded_gb": loaded_gb, "peak_gb": peak_rss_gib()}))


def run_child(shape: str, whole_batch: bool) -> dict:
    env = dict(os.environ)
    if Path(TCMALLOC).exists():
        env["LD_PRELOAD"] = TCMALLOC
    command = [sys.executable, __file__, "--child", shape]
    output = subprocess.run(
        [*command, *(["--whole-batch"] if whole_batch else [])],
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return json.loads(output.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=SHAPES, help="COUNTxSIDE, e.g. 4x512")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--whole-batch", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child, arguments.whole_batch)
        return
    print(cpu_line())
    print(f"allocator: {'tcmalloc' if Path(TCMALLOC).exists() else 'glibc (no tcmalloc)'}")
    print(
        f"{'job':<14} {'decode':<12} {'units@1 step':>12} {'s':>8} {'model GiB':>10}"
        f" {'peak GiB':>9} {'s vs whole':>11}",
        flush=True,
    )
    for shape in arguments.shapes:
        count, side = shape.split("x")
        variants = [False, True] if int(count) > 1 else [False]  # one image: no batch to slice
        rows = {whole: run_child(shape, whole) for whole in variants}
        for whole, row in rows.items():
            ratio = row["seconds"] / rows[True]["seconds"] if len(rows) > 1 else 1.0
            job = f"{count} x {side}x{side}"
            print(
                f"{job:<14} {'whole batch' if whole else 'one by one':<12}"
                f" {row['units']:>12g} {row['seconds']:>8.1f} {row['loaded_gb']:>10.2f}"
                f" {row['peak_gb']:>9.2f} {ratio:>10.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
