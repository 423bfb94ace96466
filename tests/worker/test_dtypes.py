"""SD_DTYPE and SD_TINY_VAE through the worker's own path, on the tiny demo model."""

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny
from PIL import Image
from worker_support import WorkerProcess

from sd_webui.jobs import Job
from sd_webui.settings import Settings
from sd_webui.worker import optimize
from sd_webui.worker.model_source import ModelUnavailable, locate_model
from sd_webui.worker.runner import JobRunner

JOB = {"prompt": "a red cat", "seed": 11, "width": 256, "height": 256}

# bfloat16 keeps 8 significant bits: each weight and activation is rounded by up to 2^-9
# (0.2 %), about half of one 8-bit pixel step, and the rounding errors of a few layers add up
# to about one pixel step. Measured on the demo model: 0.5 levels mean, 99 % of pixels within
# 2 levels, max 5. The bounds leave 4x margin; another seed differs by about 50 levels.
BF16_MEAN_LEVELS = 2.0
BF16_P99_LEVELS = 8.0

Loader = Callable[[str, bool], JobRunner]


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small AutoencoderTiny with random weights, a folder as for SD_TINY_VAE_MODEL."""
    torch.manual_seed(0)
    vae = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    )
    folder = tmp_path_factory.mktemp("tiny-vae")
    vae.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def load_runner(
    demo_model: Path, tiny_vae: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Loader]:
    """JobRunner.load for (SD_DTYPE, SD_TINY_VAE), each loaded once for the module.

    The CPU probe says bfloat16 is fast here, so bfloat16 also runs on an AVX2-only CPU: there
    it is slow (emulated), which the probe is about, but exact, which these tests are about.
    """
    runners: dict[tuple[str, bool], JobRunner] = {}

    def load(dtype: str, tiny: bool) -> JobRunner:
        if (dtype, tiny) not in runners:
            settings = Settings(
                sd_model=str(demo_model),
                sd_dtype=dtype,
                sd_tiny_vae=tiny,
                sd_tiny_vae_model=str(tiny_vae),
                images_dir=tmp_path_factory.mktemp("images"),
            )
            runners[dtype, tiny] = JobRunner.load(settings, locate_model(settings.sd_model))
        return runners[dtype, tiny]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(optimize, "cpu_has_native_bf16", lambda: True)
        yield load


def _pixels(runner: JobRunner, **job: object) -> np.ndarray:
    result = runner.run(Job.model_validate({**JOB, **job}))
    with Image.open(result.files[1]) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


@pytest.mark.parametrize("tiny", [False, True], ids=["sd-decoder", "tiny-decoder"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_each_cpu_dtype_and_decoder_make_valid_images(
    load_runner: Loader, dtype: str, tiny: bool
) -> None:
    runner = load_runner(dtype, tiny)
    assert runner.model.pipe.unet.dtype == getattr(torch, dtype)
    assert isinstance(runner.model.pipe.vae, AutoencoderTiny) == tiny
    assert runner.model.pipe.vae.use_slicing  # a job's images decoded one by one (memory)
    result = runner.run(Job.model_validate({**JOB, "count": 2}))
    sidecar, *pngs = result.files
    record = json.loads(sidecar.read_text())
    assert record["dtype"] == dtype
    assert record["use_tiny_auto_encoder"] is tiny
    assert record["image_seeds"] == [11, 12]
    for png in pngs:
        with Image.open(png) as image:
            image.load()
            assert (image.mode, image.size) == ("RGB", (256, 256))
            assert np.asarray(image).std() > 1, "a flat image: the decoder gave no picture"


def test_bfloat16_images_are_close_to_float32_of_the_same_seed(load_runner: Loader) -> None:
    float32 = _pixels(load_runner("float32", False))
    difference = np.abs(_pixels(load_runner("bfloat16", False)) - float32)
    assert difference.mean() <= BF16_MEAN_LEVELS
    assert np.percentile(difference, 99) <= BF16_P99_LEVELS
    # The bounds tell images apart: another seed is far outside them.
    other_seed = np.abs(_pixels(load_runner("float32", False), seed=12) - float32)
    assert other_seed.mean() > 10 * BF16_MEAN_LEVELS


def test_auto_dtype_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optimize, "cpu_has_native_bf16", lambda: True)
    assert optimize.resolve_dtype("auto", "cpu") == torch.bfloat16
    assert optimize.resolve_dtype("auto", "cuda") == torch.float16
    monkeypatch.setattr(optimize, "cpu_has_native_bf16", lambda: False)
    assert optimize.resolve_dtype("auto", "cpu") == torch.float32
    assert optimize.resolve_dtype("float32", "cpu") == torch.float32


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_dtype_the_cpu_cannot_run_fast_is_refused(
    dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(optimize, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match=f"^SD_DTYPE={dtype} .*use SD_DTYPE=auto"):
        optimize.resolve_dtype(dtype, "cpu")


async def test_an_unsupported_dtype_stops_the_worker_at_start_up(
    demo_model: Path, tmp_path: Path
) -> None:
    settings = Settings(amqp_url="amqp://guest:guest@127.0.0.1:1/", sd_model=str(demo_model))
    worker = WorkerProcess(settings, tmp_path / "worker.log", SD_DTYPE="float16")
    assert await worker.wait(120) == 1
    assert "loaded" not in worker.log  # refused before the model was loaded
    errors = [line for line in worker.log.splitlines() if " ERROR " in line]
    assert len(errors) == 1, worker.log
    assert "SD_DTYPE=float16 is not usable on cpu" in errors[0]
    assert "Traceback" not in worker.log


def test_a_missing_tiny_vae_is_a_start_up_error(demo_model: Path, tmp_path: Path) -> None:
    settings = Settings(
        sd_model=str(demo_model), sd_tiny_vae=True, sd_tiny_vae_model=str(tmp_path / "no-taesd")
    )
    with pytest.raises(ModelUnavailable, match=r"^SD_TINY_VAE_MODEL=.*no-taesd could not be"):
        JobRunner.load(settings, locate_model(settings.sd_model))
