"""What loading the model once buys, and what one sd-turbo image costs.

1. Side by side on the demo model folder: JOBS jobs through a warm `sd-worker` (RabbitMQ,
   timed from publishing to the last file) vs the old design, a fresh Python process per job
   that imports, loads the model and generates once. Prints seconds per job and the ratio.
2. Seconds per 512x512 image, 1 step, float32, for the real sd-turbo architecture with random
   weights (bench/sd_turbo_arch.py), split into text encoder, UNet step and VAE decode.

Run: `python bench/worker.py` (needs RabbitMQ on AMQP_URL, default the local broker).
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import aio_pika
import torch
from diffusers import AutoPipelineForText2Image
from sd_turbo_arch import build_sd_turbo

from sd_webui.broker import declare_queues
from sd_webui.demo_model import build_demo_model
from sd_webui.jobs import Job
from sd_webui.metadata import FastSDSettings
from sd_webui.worker.outputs import write_job_files
from sd_webui.worker.pipeline import LoadedModel

JOBS = 5
JOB = {"prompt": "a green dog", "count": 1, "width": 512, "height": 512, "steps": 1}
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REPO = Path(__file__).resolve().parents[1]


def one_shot(model: str, images_dir: str, body: str) -> None:
    """The old design's unit of work, run as a whole process per job: load, generate once,
    write the files (no warm-up: there is no second job to warm up for)."""
    pipe = AutoPipelineForText2Image.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    job = Job.model_validate_json(body)
    images, seeds = LoadedModel(pipe, model, "cpu", {}).generate(job)
    record = FastSDSettings.for_job(job, model_id=model, seeds=seeds)
    write_job_files(Path(images_dir), job.id, record, images)


def process_per_job(model: Path, images_dir: Path) -> float:
    """Seconds per job when every job starts a new Python process."""
    started = time.perf_counter()
    for _ in range(JOBS):
        body = json.dumps({**JOB, "id": uuid.uuid4().hex})
        command = [sys.executable, __file__, "--one-shot", str(model), str(images_dir), body]
        subprocess.run(
            command, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
    return (time.perf_counter() - started) / JOBS


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


async def _publish(queue_name: str, ids: list[str]) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await declare_queues(channel, queue_name)
        for job_id in ids:
            body = json.dumps({**JOB, "id": job_id}).encode()
            await channel.default_exchange.publish(
                aio_pika.Message(body, message_id=job_id), queue_name
            )


async def _delete(queue_name: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in (queue_name, f"{queue_name}.dead"):
            await channel.queue_delete(name)


def warm_worker(model: Path, images_dir: Path) -> float:
    """Seconds per job through one `sd-worker` process that loaded the model before."""
    queue_name, port = f"bench-{uuid.uuid4().hex[:8]}", _free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "AMQP_URL": AMQP_URL,
        "QUEUE_NAME": queue_name,
        "IMAGES_DIR": str(images_dir),
        "SD_MODEL": str(model),
        "METRICS_PORT": str(port),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "sd_webui.worker"], cwd=REPO, env=env, stderr=subprocess.DEVNULL
    )
    try:
        while not _ready(port):
            if worker.poll() is not None:
                raise RuntimeError("the worker exited before it was ready")
            time.sleep(0.2)
        ids = [uuid.uuid4().hex for _ in range(JOBS)]
        started = time.perf_counter()
        asyncio.run(_publish(queue_name, ids))
        while not all((images_dir / f"{job_id}-1.png").exists() for job_id in ids):
            time.sleep(0.05)
        return (time.perf_counter() - started) / JOBS
    finally:
        worker.terminate()
        worker.wait()
        asyncio.run(_delete(queue_name))


@torch.inference_mode()
def sd_turbo_image() -> dict[str, float]:
    """Seconds of each part of one 512x512, 1-step image (after a 256x256 warm-up image)."""
    pipe = build_sd_turbo(torch.float32)
    pipe("warm-up", num_inference_steps=1, guidance_scale=0.0, width=256, height=256)
    latents = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    seconds = {}
    started = time.perf_counter()
    embeddings = pipe.encode_prompt("a green dog", "cpu", 1, False)[0]
    seconds["text encoder"] = time.perf_counter() - started
    started = time.perf_counter()
    pipe.unet(latents, 999, encoder_hidden_states=embeddings)
    seconds["UNet step"] = time.perf_counter() - started
    started = time.perf_counter()
    pipe.vae.decode(latents / pipe.vae.config.scaling_factor)
    seconds["VAE decode"] = time.perf_counter() - started
    return seconds


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        model = build_demo_model(Path(folder) / "model")
        warm = warm_worker(model, Path(folder) / "warm")
        cold = process_per_job(model, Path(folder) / "cold")
    print(f"demo model, {JOBS} jobs of 1 image 512x512, 1 step, on {os.cpu_count()} CPUs")
    print(f"  warm sd-worker (model loaded once): {warm:7.2f} s/job")
    print(f"  new process per job (old design):   {cold:7.2f} s/job")
    print(f"  ratio old/new:                      {cold / warm:7.1f}x")
    parts = sd_turbo_image()
    print("sd-turbo architecture, random weights, float32, 512x512, 1 step, one image")
    for name, seconds in parts.items():
        print(f"  {name:<14} {seconds:7.2f} s")
    print(f"  {'total':<14} {sum(parts.values()):7.2f} s/image")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one-shot"]:
        one_shot(*sys.argv[2:5])
    else:
        main()
