"""AUTOMATIC1111's own Python client, `webuiapi`, against the running app (demo model)."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import webuiapi

from tests.api.conftest import PASSWORD, USER, basic


@pytest.fixture
def client(api_url: str) -> webuiapi.WebUIApi:
    api = webuiapi.WebUIApi(baseurl=f"{api_url}/sdapi/v1", steps=1)
    api.set_auth(USER, PASSWORD)
    return api


def pixels(image) -> bytes:
    return image.convert("RGB").tobytes()


def test_a_batch_comes_back_with_seeds_that_make_each_image_again(client, api_images: Path):
    result = client.txt2img(prompt="a lighthouse at dusk", batch_size=2, cfg_scale=0, steps=2)
    assert len(result.images) == 2
    seeds = result.info["all_seeds"]
    assert len(seeds) == 2 and seeds[0] != seeds[1]
    assert result.info["seed"] == seeds[0]
    assert result.info["infotexts"][1].endswith(
        f"Seed: {seeds[1]}, Size: 512x512, Model: {result.info['sd_model_name']}"
    )
    for seed, image in zip(seeds, result.images, strict=True):
        again = client.txt2img(prompt="a lighthouse at dusk", seed=seed, cfg_scale=0, steps=2)
        assert again.info["all_seeds"] == [seed]
        assert pixels(again.image) == pixels(image)
    for job_id in result.info["job_ids"]:  # in the folder, so in the gallery
        assert (api_images / f"{job_id}-1.png").is_file()


@pytest.fixture
def long_job(client) -> Iterator[dict]:
    """A 20-step 1024x1024 txt2img running in a thread (it takes about a second per step)."""
    answer: dict = {}

    def run() -> None:
        started = time.monotonic()
        answer["result"] = client.txt2img(
            prompt="a slow harbour", steps=20, cfg_scale=0, width=1024, height=1024
        )
        answer["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    yield answer
    client.interrupt()
    thread.join(120)


def test_progress_while_a_job_runs_then_interrupt(client, long_job: dict, api_log: Path):
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        progress = client.get_progress()
        if progress["state"]["sampling_step"] >= 1:
            seen.append(progress)
            break
        time.sleep(0.02)
    assert seen, "no progress was reported"
    progress = seen[-1]
    assert 0 < progress["progress"] < 1
    assert progress["state"]["sampling_steps"] == 20
    assert progress["state"]["job_count"] == 1
    assert progress["eta_relative"] > 0
    assert client.interrupt() == {}
    deadline = time.monotonic() + 30
    while "result" not in long_job and time.monotonic() < deadline:
        time.sleep(0.1)
    result = long_job["result"]
    assert result.images == [] and result.info["states"] == ["cancelled"]
    assert long_job["seconds"] < 20, "the interrupt did not stop the job"
    idle = client.get_progress()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0


def test_what_clients_ask_at_connect_time(client, api_url: str, demo_model: Path, api_log: Path):
    assert client.util_get_model_names() == [str(demo_model)]
    assert client.util_get_current_model() == str(demo_model)
    assert client.util_get_sampler_names() == ["Euler"]
    assert client.util_get_scheduler_names() == ["automatic"]
    for listing in (
        client.get_upscalers(),
        client.get_latent_upscale_modes(),
        client.get_sd_vae(),
        client.get_loras(),
        client.get_prompt_styles(),
    ):
        assert isinstance(listing, list)
    options = client.get_options()
    options["sd_model_checkpoint"] = "v1-5-pruned-emaonly.safetensors [6ce0161689]"
    client.set_options(options)  # Open WebUI posts the whole dict back with another checkpoint
    assert "asked for checkpoint 'v1-5-pruned-emaonly.safetensors [6ce0161689]'" in (
        api_log.read_text()
    )
    assert client.util_get_current_model() == str(demo_model)
    auth = basic(USER, PASSWORD)
    assert httpx.get(f"{api_url}/internal/ping", headers=auth).json() == {}
    assert httpx.get(f"{api_url}/sdapi/v1/scripts", headers=auth).json() == {
        "txt2img": [],
        "img2img": [],
    }


def test_a_wrong_password_is_refused(api_url: str):
    client = webuiapi.WebUIApi(baseurl=f"{api_url}/sdapi/v1")
    client.set_auth(USER, "wrong")
    with pytest.raises(RuntimeError, match="401"):
        client.txt2img(prompt="a fox", steps=1)
