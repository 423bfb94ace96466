"""What `accelerate` is worth when a worker loads its model: seconds and peak memory.

A worker loads `SD_MODEL` from a diffusers folder once at start (`load_pipeline`), and under
KEDA it starts often. diffusers (and transformers) use accelerate, when it is installed, to
create each model's layers empty on the `meta` device and fill them straight from the
safetensors files; without it each layer is allocated first, and diffusers warns that
accelerate is "strongly recommended ... for faster and less memory-intense model loading".
(diffusers 0.42 skips the random initialisation either way.) The worker loads with
`low_cpu_mem_usage=False`, because this measures no gain; `pip install accelerate` to run it.

The folder is the real sd-turbo architecture with random weights (bench/sd_turbo_arch.py),
saved once in float32 under .cache/bench/ (4.9 GB; the weights' values do not change what
loading costs). Each load runs in a fresh child process, the two variants taking turns, so that
a burst of load from other processes slows both alike. "without" hides the installed
accelerate from the child (as if it were not installed). Printed per variant: the median and
best of the seconds to load and read every weight once (the worker's warm-up does that
first), the child's CPU seconds, its peak RSS (VmHWM: the mapped weight files count in it) and
its anonymous memory at the end (RssAnon: what it holds beyond the files). `--cold` drops the
page cache before each load (root only), as on a node that has not read the model yet.

Run: `python bench/model_load.py [--rounds 3] [--cold]` (about 5 minutes on two EPYC cores, plus
about 2 to build and save the folder the first time).
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_line

FOLDER = Path(".cache/bench/sd-turbo-random")
VARIANTS = ("with accelerate", "without accelerate")

# The child: load the folder the way the worker does, then read every weight once (what the
# warm-up image does first: a lazily mapped file is read only then), and report what it cost.
LOAD = """
import json, sys, time
if sys.argv[2] == "without accelerate":
    sys.modules["accelerate"] = None  # find_spec() now says: not installed
import torch
from diffusers import AutoPipelineForText2Image
from diffusers.utils import is_accelerate_available
started = time.perf_counter()
pipe = AutoPipelineForText2Image.from_pretrained(
    sys.argv[1], dtype=torch.float32, local_files_only=True
)
loaded = time.perf_counter()
with torch.inference_mode():
    for model in (pipe.text_encoder, pipe.unet, pipe.vae):
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.sum()
read = time.perf_counter()
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
kb = lambda key: int(status[key].split()[0])
print(json.dumps({
    "load": loaded - started,
    "total": read - started,
    "cpu": time.process_time(),
    "peak_gb": kb("VmHWM") / 2**20,
    "anon_gb": kb("RssAnon") / 2**20,
    "accelerate": is_accelerate_available(),
}))
"""


def save_folder() -> None:
    """The sd-turbo architecture with random weights, saved as a diffusers folder."""
    from sd_turbo_arch import build_sd_turbo

    print(f"building {FOLDER} ...", flush=True)
    partial = FOLDER.with_name(FOLDER.name + ".partial")  # whole, or not there at all
    build_sd_turbo().save_pretrained(partial)
    partial.rename(FOLDER)


def drop_page_cache() -> None:
    """Forget the folder's pages, as on a node that has not read the model yet (needs root)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def load_once(variant: str, cold: bool) -> dict:
    if cold:
        drop_page_cache()
    result = subprocess.run(
        [sys.executable, "-c", LOAD, str(FOLDER), variant],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--cold", action="store_true", help="drop the page cache before each load (root only)"
    )
    arguments = parser.parse_args()
    rounds = arguments.rounds
    if importlib.util.find_spec("accelerate") is None:
        sys.exit("this compares loading with and without accelerate: pip install accelerate")
    print(cpu_line())
    if not FOLDER.exists():
        save_folder()
    started = time.perf_counter()
    runs: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    for _ in range(rounds):
        for variant in VARIANTS:
            run = load_once(variant, arguments.cold)
            assert run["accelerate"] == (variant == "with accelerate"), run
            runs[variant].append(run)
    cache = "cold page cache" if arguments.cold else "warm page cache"
    print(f"{rounds} loads each, {cache}, taking turns, in {time.perf_counter() - started:.0f} s")
    print(
        f"{'variant':<20} {'from_pretrained s':>17} {'+ first read s':>14} {'best':>6}"
        f" {'cpu s':>6} {'peak GB':>8} {'anon GB':>8} {'vs with':>8}"
    )
    base = statistics.median(run["total"] for run in runs[VARIANTS[0]])
    for variant, results in runs.items():
        total = statistics.median(run["total"] for run in results)
        print(
            f"{variant:<20} {statistics.median(run['load'] for run in results):17.2f}"
            f" {total:14.2f} {min(run['total'] for run in results):6.2f}"
            f" {statistics.median(run['cpu'] for run in results):6.2f}"
            f" {max(run['peak_gb'] for run in results):8.2f}"
            f" {max(run['anon_gb'] for run in results):8.2f} {total / base:7.2f}x"
        )


if __name__ == "__main__":
    main()
