"""SD_BACKEND=openvino on the demo model: the same job path and seeds as torch, the conversion
cached and keyed by the weights, cancel at a step, and clear start-up errors."""

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from worker_support import WorkerProcess, publish

from sd_webui.cancellation import JobCancelled
from sd_webui.demo_model import build_demo_model
from sd_webui.jobs import Job
from sd_webui.settings import Settings
from sd_webui.worker.model_source import ModelUnavailable, locate_model
from sd_webui.worker.pipeline import LoadedModel, load_pipeline
from sd_webui.worker.runner import JobRunner
from tests.conftest import unavailable

JOB = Job(prompt="green dog", count=2, width=256, height=256, steps=2, seed=5)
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def openvino_settings(model: Path, cache: Path, **more: object) -> Settings:
    return Settings(
        sd_model=str(model),
        sd_backend="openvino",
        sd_dtype="float32",
        sd_openvino_cache=cache,
        **more,
    )


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture(scope="module")
def ov_model(demo_model: Path, ov_cache: Path) -> LoadedModel:
    settings = openvino_settings(demo_model, ov_cache)
    return load_pipeline(settings, locate_model(settings.sd_model))


def pixels(model: LoadedModel, job: Job) -> list[np.ndarray]:
    images, _ = model.generate(job)
    return [np.asarray(image, dtype=np.float64) for image in images]


def test_the_same_seeds_make_the_same_pixels_as_torch(
    ov_model: LoadedModel, demo_model: Path
) -> None:
    """float32 both ways: at most 2 of 255 apart anywhere, and almost nowhere (rounding)."""
    settings = Settings(sd_model=str(demo_model), sd_dtype="float32")
    torch_model = load_pipeline(settings, locate_model(settings.sd_model))
    for ours, theirs in zip(pixels(ov_model, JOB), pixels(torch_model, JOB), strict=True):
        assert theirs.std() > 1
        difference = np.abs(ours - theirs)
        assert difference.max() <= 2 and difference.mean() < 0.01


def test_the_metadata_says_openvino_and_where_its_model_is(
    ov_model: LoadedModel, ov_cache: Path, tmp_path: Path
) -> None:
    result = JobRunner(ov_model, tmp_path).run(JOB)
    record = json.loads(result.files[0].read_text())
    assert record["use_openvino"] is True
    location = Path(record["openvino_lcm_model_id"])
    assert location.parent == ov_cache and (location / "model.xml").is_file()
    assert record["image_seeds"] == [5, 6]


def test_a_cancel_at_a_step_writes_nothing(ov_model: LoadedModel, tmp_path: Path) -> None:
    def cancel(step: int, steps: int) -> None:
        raise JobCancelled(JOB.id)

    with pytest.raises(JobCancelled):
        JobRunner(ov_model, tmp_path).run(JOB, cancel)
    assert not any(tmp_path.iterdir())


def test_the_conversion_is_cached_and_keyed_by_the_weights(
    ov_model: LoadedModel, demo_model: Path, ov_cache: Path, tmp_path: Path
) -> None:
    """A second start loads the saved IR (no conversion); another model converts anew."""
    entries = sorted(path.name for path in ov_cache.iterdir())
    started = time.perf_counter()
    again = load_pipeline(openvino_settings(demo_model, ov_cache), locate_model(str(demo_model)))
    print(f"\nstart with the cached conversion: {time.perf_counter() - started:.1f} s")
    assert sorted(path.name for path in ov_cache.iterdir()) == entries
    assert again.metadata["openvino_lcm_model_id"] == ov_model.metadata["openvino_lcm_model_id"]
    other = build_demo_model(tmp_path / "other-model", seed=1)
    load_pipeline(openvino_settings(other, ov_cache), locate_model(str(other)))
    assert len(list(ov_cache.iterdir())) == len(entries) + 2  # its own text encoder and UNet


def test_without_openvino_the_start_fails_naming_the_setting(
    demo_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` meets then
    settings = openvino_settings(demo_model, tmp_path)
    with pytest.raises(ModelUnavailable, match="SD_BACKEND=openvino needs the openvino package"):
        load_pipeline(settings, locate_model(settings.sd_model))


def test_an_unwritable_cache_is_a_clear_start_up_error(demo_model: Path, tmp_path: Path) -> None:
    not_a_folder = tmp_path / "cache-is-a-file"
    not_a_folder.write_text("")
    settings = openvino_settings(demo_model, not_a_folder)
    with pytest.raises(ModelUnavailable, match="converting the model failed"):
        load_pipeline(settings, locate_model(settings.sd_model))


def test_openvino_starts_under_tcmalloc_with_tbb_sanitizers_on() -> None:
    """The worker image preloads tcmalloc, under which OpenVINO aborts at start;
    TBB_ENABLE_SANITIZERS=1 (Dockerfile, Makefile) is what keeps it running."""
    if not Path(TCMALLOC).exists():
        unavailable("tcmalloc is not installed (Debian package libgoogle-perftools4)")
    probe = [sys.executable, "-c", "import openvino; print(openvino.Core().available_devices)"]
    preload = {"LD_PRELOAD": TCMALLOC, "PATH": "/usr/bin:/bin"}
    broken = subprocess.run(probe, env=preload, capture_output=True, text=True)
    assert broken.returncode == -signal.SIGABRT, (broken.returncode, broken.stderr)
    fixed = {**preload, "TBB_ENABLE_SANITIZERS": "1"}
    started = subprocess.run(probe, env=fixed, capture_output=True, text=True)
    assert started.returncode == 0 and "CPU" in started.stdout, started.stderr


@pytest.mark.broker
async def test_a_worker_with_the_openvino_backend_does_a_job_from_the_queue(
    worker_settings: Settings, ov_cache: Path, tmp_path: Path
) -> None:
    """`sd-worker` as deployed, under tcmalloc with the image's TBB setting, on the cache the
    module's model filled: it takes a job from RabbitMQ and writes it."""
    job_id = uuid.uuid4().hex
    body = {"id": job_id, "prompt": "green dog", "width": 256, "height": 256}
    await publish(worker_settings.amqp_url, worker_settings.queue_name, body, message_id=job_id)
    worker = WorkerProcess(
        worker_settings,
        tmp_path / "worker.log",
        SD_BACKEND="openvino",
        SD_OPENVINO_CACHE=str(ov_cache),
        EXIT_AFTER_ONE_TASK="1",
        LD_PRELOAD=TCMALLOC,  # missing, the loader only warns
        TBB_ENABLE_SANITIZERS="1",
    )
    assert await worker.wait(120) == 0, worker.log
    assert "converted" not in worker.log  # the cached IR, loaded
    record = json.loads((worker_settings.images_dir / f"{job_id}.json").read_text())
    assert record["use_openvino"] is True
    assert (worker_settings.images_dir / f"{job_id}-1.png").is_file()
