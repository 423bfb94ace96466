"""Seconds per 512x512 sd-turbo image: the default fp32 path, each speed option, the fast path.

The real sd-turbo architecture with random weights (bench/sd_turbo_arch.py) and a
default-config AutoencoderTiny (TAESD's architecture) with random weights: the arithmetic is
that of the trained models. One run prints one table, side by side: each row is the median of
RUNS images after a warm-up image, split into text encoder / UNet step / decoder (forward
hooks), with process CPU and system time, minor page faults and the peak RSS (VmHWM, reset
before each image). The rows of a process take turns image by image, so a burst of load from
other processes on a shared machine slows every row alike; `best` is each row's fastest image.

The allocator can only be chosen when a process starts, so the rows run in two child
processes of this script: one with glibc's malloc, one with tcmalloc in LD_PRELOAD.
`fast path` is the worker's own `prepare_pipeline` with SD_DTYPE=auto and SD_TINY_VAE=1;
the `fast path ...` rows take one thing out of it (or add one) to show what that thing is worth.
The `openvino ...` rows are that fast path with SD_BACKEND=openvino (text encoder and UNet
converted once into .cache/bench/openvino, which takes minutes and about 10 GB the first time),
beside the same path in torch float32; `--openvino` runs those rows and the fast path alone.

Run: `python bench/inference.py` (23 minutes on two EPYC cores shared with other work; less on
a quiet machine; needs the Debian package libgoogle-perftools4 for tcmalloc).
"""

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import cache
from pathlib import Path

import torch
from diffusers import AutoencoderTiny, StableDiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from machine import peak_rss_gib
from sd_turbo_arch import build_sd_turbo

from sd_webui.settings import Settings
from sd_webui.worker.openvino_backend import use_openvino
from sd_webui.worker.optimize import (
    cpu_has_native_bf16,
    load_tiny_vae,
    prepare_pipeline,
    resolve_dtype,
    use_channels_last,
)

RUNS = 3
SIZE = 512
PROMPT = "a photo of a green dog in the snow"
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
COMPONENTS = ("text", "unet", "decode")

Pipeline = StableDiffusionPipeline
Variant = Callable[[Path], Pipeline]


@cache
def sd_turbo(dtype: torch.dtype) -> Pipeline:
    """The modules every row of a process shares, built once per dtype; rows never change them."""
    return build_sd_turbo(dtype)


def _copy(base: Pipeline) -> Pipeline:
    """A pipeline sharing `base`'s modules, so swapping one component leaves `base` as it was."""
    pipe = StableDiffusionPipeline(**base.components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def default(tiny: Path) -> Pipeline:
    return sd_turbo(torch.float32)


def tiny_vae(tiny: Path) -> Pipeline:
    pipe = _copy(sd_turbo(torch.float32))
    pipe.vae = load_tiny_vae(str(tiny), "cpu", torch.float32)
    return pipe


def fast_path(tiny: Path) -> Pipeline:
    """What the worker runs with SD_DTYPE=auto and SD_TINY_VAE=1 (its own tiny VAE)."""
    dtype = resolve_dtype("auto", "cpu")
    pipe = _copy(sd_turbo(dtype))
    settings = Settings(sd_dtype="auto", sd_tiny_vae=True, sd_tiny_vae_model=str(tiny))
    prepare_pipeline(pipe, settings, "cpu", dtype)
    return pipe


def fast_contiguous_decoder(tiny: Path) -> Pipeline:
    pipe = fast_path(tiny)
    pipe.vae.to(memory_format=torch.contiguous_format)
    return pipe


def fast_channels_last_unet(tiny: Path) -> Pipeline:
    pipe = fast_path(tiny)
    pipe.unet = copy.deepcopy(pipe.unet)
    use_channels_last(pipe.unet)
    return pipe


def bfloat16(tiny: Path) -> Pipeline:
    return sd_turbo(torch.bfloat16)


def bfloat16_channels_last_decoder(tiny: Path) -> Pipeline:
    pipe = _copy(sd_turbo(torch.bfloat16))
    pipe.vae = copy.deepcopy(pipe.vae)
    use_channels_last(pipe.vae)
    return pipe


OPENVINO_CACHE = Path(".cache/bench/openvino")  # converted once, reused by later runs


def fast_path_float32(tiny: Path) -> Pipeline:
    """The fast path in float32: the torch side by side with OpenVINO f32."""
    pipe = _copy(sd_turbo(torch.float32))
    settings = Settings(sd_dtype="float32", sd_tiny_vae=True, sd_tiny_vae_model=str(tiny))
    prepare_pipeline(pipe, settings, "cpu", torch.float32)
    return pipe


def _openvino(tiny: Path, dtype: str) -> Pipeline:
    """The fast path with SD_BACKEND=openvino, as the worker sets it up (`load_pipeline`)."""
    pipe = fast_path_float32(tiny)
    settings = Settings(
        sd_backend="openvino",
        sd_dtype=dtype,
        sd_tiny_vae=True,
        sd_tiny_vae_model=str(tiny),
        sd_openvino_cache=OPENVINO_CACHE,
    )
    use_openvino(pipe, settings)
    return pipe


def openvino_auto(tiny: Path) -> Pipeline:
    """OpenVINO's own precision for this CPU (bf16 where it is native, else f32)."""
    return _openvino(tiny, "auto")


def openvino_float32(tiny: Path) -> Pipeline:
    return _openvino(tiny, "float32")


# (row, variant, under torch.inference_mode). Without inference_mode the pipeline runs under
# its own torch.no_grad(), as diffusers does by default.
Row = tuple[str, Variant, bool]
GLIBC_ROWS: list[Row] = [
    ("default fp32 (glibc)", default, False),
    ("tiny VAE", tiny_vae, False),
    ("fast path, glibc malloc", fast_path, True),
]
BF16_ROWS: list[Row] = [
    ("bfloat16", bfloat16, False),
    ("bfloat16 + channels_last VAE", bfloat16_channels_last_decoder, False),
]
TCMALLOC_ROWS: list[Row] = [
    ("fast path (tcmalloc)", fast_path, True),
    ("fast path, contiguous decoder", fast_contiguous_decoder, True),
    ("fast path, no inference_mode", fast_path, False),
    ("fast path + channels_last UNet", fast_channels_last_unet, True),
]
# SD_BACKEND=openvino against torch, both under tcmalloc with TBB_ENABLE_SANITIZERS=1 (as the
# worker image runs); `--openvino` runs these alone.
OPENVINO_ROWS: list[Row] = [
    ("fast path, float32 (torch)", fast_path_float32, True),
    ("openvino fast path, auto", openvino_auto, True),
    ("openvino fast path, f32", openvino_float32, True),
]


def _reset_peak_rss() -> None:
    """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


@contextmanager
def _component_timer(pipe: Pipeline) -> Iterator[dict[str, float]]:
    """Seconds spent in the text encoder, the UNet and the VAE's decoder, by forward hooks."""
    seconds = dict.fromkeys(COMPONENTS, 0.0)
    started: dict[str, float] = {}
    handles = []
    for name, module in zip(
        COMPONENTS, (pipe.text_encoder, pipe.unet, pipe.vae.decoder), strict=True
    ):

        def before(_module, _args, name=name):
            started[name] = time.perf_counter()

        def after(_module, _args, _output, name=name):
            seconds[name] += time.perf_counter() - started[name]

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        yield seconds
    finally:
        for handle in handles:
            handle.remove()


def _image(pipe: Pipeline, inference_mode: bool) -> dict[str, float]:
    """One image the way the worker calls the pipeline, with its costs."""
    _reset_peak_rss()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with (
        _component_timer(pipe) as seconds,
        torch.inference_mode() if inference_mode else nullcontext(),
    ):
        pipe(
            prompt=PROMPT,
            num_inference_steps=1,
            guidance_scale=0.0,
            width=SIZE,
            height=SIZE,
            generator=[torch.Generator("cpu").manual_seed(0)],
        )
    total = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "total": total,
        **seconds,
        "other": total - sum(seconds.values()),
        "cpu": after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime,
        "sys": after.ru_stime - usage.ru_stime,
        "faults": float(after.ru_minflt - usage.ru_minflt),
        "peak_gb": peak_rss_gib(),
    }


def _measure(rows: list[Row], tiny: Path, runs: int) -> list[dict[str, float | str]]:
    """Each row's medians over `runs` images after one warm-up image; rows take turns."""
    pipes = [(name, variant(tiny), inference_mode) for name, variant, inference_mode in rows]
    for _name, pipe, inference_mode in pipes:  # oneDNN primitives, allocator, lazy set-up
        _image(pipe, inference_mode)
    images: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in rows}
    for run in range(runs):
        for name, pipe, inference_mode in pipes:
            images[name].append(_image(pipe, inference_mode))
            print(f"  run {run + 1}, {name}: {images[name][-1]['total']:.1f} s", file=sys.stderr)
    results = []
    for name, measured in images.items():
        row = {key: statistics.median(image[key] for image in measured) for key in measured[0]}
        row["best"] = min(image["total"] for image in measured)
        row["peak_gb"] = max(image["peak_gb"] for image in measured)
        results.append({"name": name, **row})
    return results


def _bf16_probe() -> str:
    """Why the bfloat16 rows are not run here: one UNet-sized matmul in each dtype."""
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        left, right = torch.randn(256, 1280, dtype=dtype), torch.randn(1280, 1280, dtype=dtype)
        left @ right
        started = time.perf_counter()
        left @ right
        seconds[dtype] = time.perf_counter() - started
    slower = seconds[torch.bfloat16] / seconds[torch.float32]
    return (
        "bfloat16 rows not run: this CPU has neither avx512_bf16 nor amx_bf16; a 256x1280x1280 "
        f"matmul takes {seconds[torch.bfloat16]:.2f} s in bf16 vs {seconds[torch.float32]:.3f} s "
        f"in fp32 ({slower:.0f}x slower), so SD_DTYPE=bfloat16 is refused at start-up"
    )


def child(allocator: str, tiny: Path, runs: int) -> None:
    """Run this allocator's rows; print them as one JSON line on stdout."""
    rows = {
        "glibc": GLIBC_ROWS,
        "tcmalloc": TCMALLOC_ROWS + OPENVINO_ROWS,
        "openvino": [TCMALLOC_ROWS[0], *OPENVINO_ROWS],  # beside the torch fast path, too
    }[allocator]
    notes = []
    if allocator == "glibc":
        if cpu_has_native_bf16():
            rows = rows + BF16_ROWS
        else:
            notes.append(_bf16_probe())
    diffusers_logging.set_verbosity_error()  # the same notes for every row; the table is the output
    print(f"{allocator}: {len(rows)} rows", file=sys.stderr, flush=True)
    print(json.dumps({"rows": _measure(rows, tiny, runs), "notes": notes}))


def _run_child(allocator: str, tiny: Path, runs: int) -> dict:
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if allocator in ("tcmalloc", "openvino"):
        env["LD_PRELOAD"] = TCMALLOC
        env["TBB_ENABLE_SANITIZERS"] = "1"  # OpenVINO aborts under tcmalloc without it
    command = [sys.executable, __file__, "--child", allocator, "--tiny", str(tiny)]
    output = subprocess.run(
        [*command, "--runs", str(runs)], env=env, check=True, stdout=subprocess.PIPE, text=True
    )
    return json.loads(output.stdout.splitlines()[-1])


def _print_table(rows: list[dict], runs: int) -> None:
    baseline = rows[0]["total"]
    header = (
        f"{'row':32} {'s/image':>8} {'best':>6} {'vs default':>10} {'cpu s':>6} {'cpu vs':>7} "
        f"{'text':>6} {'UNet':>6} {'decode':>7} {'other':>6} {'sys s':>6} {'faults':>8} "
        f"{'peak GB':>8}"
    )
    print(f"\nsd-turbo 512x512, 1 step: seconds per image, median of {runs} after a warm-up")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['name']:32} {row['total']:8.2f} {row['best']:6.2f} "
            f"{baseline / row['total']:9.2f}x "
            f"{row['cpu']:6.1f} {rows[0]['cpu'] / row['cpu']:6.2f}x "
            f"{row['text']:6.2f} {row['unet']:6.2f} {row['decode']:7.2f} {row['other']:6.2f} "
            f"{row['sys']:6.2f} {row['faults'] / 1000:7.0f}k "
            f"{row['peak_gb']:8.2f}"
        )
    fast = next((row for row in rows if row["name"] == "fast path (tcmalloc)"), None)
    if fast is None:  # --openvino: its rows alone
        return
    limit = sum(min(row[key] for row in rows) for key in COMPONENTS)
    print(
        f"\nfast path: {baseline / fast['total']:.2f}x the default fp32 path (goal >= 8x); "
        f"{fast['total'] / limit:.2f}x the sum of the best components, {limit:.2f} s "
        "(fastest text encoder + UNet step + decoder of any row; goal <= 1.15x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS, help="timed images per row (median)")
    parser.add_argument("--openvino", action="store_true", help="the OpenVINO rows alone")
    parser.add_argument(
        "--child", choices=("glibc", "tcmalloc", "openvino"), help=argparse.SUPPRESS
    )
    parser.add_argument("--tiny", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.tiny, args.runs)
        return
    if not Path(TCMALLOC).is_file():
        sys.exit(f"{TCMALLOC} is missing: apt-get install -y libgoogle-perftools4")
    started = time.perf_counter()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        AutoencoderTiny().save_pretrained(folder)  # TAESD's architecture, random weights
        allocators = ("openvino",) if args.openvino else ("glibc", "tcmalloc")
        results = [_run_child(allocator, Path(folder), args.runs) for allocator in allocators]
    rows = [row for result in results for row in result["rows"]]
    _print_table(rows, args.runs)
    for note in (note for result in results for note in result["notes"]):
        print(note)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"bf16 native: {cpu_has_native_bf16()}; load average {load:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end; bench took {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
