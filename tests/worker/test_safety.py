"""SD_SAFETY_CHECKER on the real loading and checking path: a tiny randomly initialised
StableDiffusionSafetyChecker saved with `save_pretrained`, its concept thresholds set so that it
flags every image (or none), run by the worker on the demo model."""

import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from events_support import EventLog
from PIL import Image
from transformers import CLIPConfig, CLIPImageProcessor
from worker_support import WorkerProcess, publish, running

from sd_webui.jobs import Job
from sd_webui.settings import Settings
from sd_webui.worker.consumer import Consumer
from sd_webui.worker.model_source import ModelUnavailable
from sd_webui.worker.pipeline import LoadedModel
from sd_webui.worker.runner import JobRunner
from sd_webui.worker.safety import SafetyChecker

JOB = {"prompt": "green dog", "count": 2, "width": 256, "height": 256, "seed": 3}


def save_tiny_checker(folder: Path, threshold: float) -> Path:
    """A safety checker of a few thousand weights. A concept is flagged where the cosine of the
    image's embedding and the concept's exceeds its threshold: -2 flags all, 2 flags none."""
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )  # fmt: skip
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(threshold)
        checker.special_care_embeds_weights.fill_(threshold)
    checker.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkers")
    return {
        "flags all": save_tiny_checker(root / "flags-all", -2.0),
        "flags none": save_tiny_checker(root / "flags-none", 2.0),
    }


def runner_with(checker: Path, model: LoadedModel, images: Path) -> JobRunner:
    settings = Settings(sd_safety_checker=True, sd_safety_checker_model=str(checker))
    return JobRunner(model, images, SafetyChecker.load(settings, "cpu"))


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_flagged_images_are_written_black_and_recorded(
    checkers: dict[str, Path], loaded_model: LoadedModel, tmp_path: Path
) -> None:
    runner = runner_with(checkers["flags all"], loaded_model, tmp_path)
    result = runner.run(Job.model_validate(JOB))
    sidecar, *pngs = result.files
    record = json.loads(sidecar.read_text())
    assert record["use_safety_checker"] is True
    assert record["nsfw"] == [True, True]
    assert result.filtered == [1, 2]
    for png in pngs:
        image = pixels(png)
        assert image.shape == (256, 256, 3) and not image.any()  # the same size, all black


def test_images_the_checker_passes_are_kept_as_generated(
    checkers: dict[str, Path], loaded_model: LoadedModel, tmp_path: Path
) -> None:
    checked = runner_with(checkers["flags none"], loaded_model, tmp_path / "checked")
    plain = JobRunner(loaded_model, tmp_path / "plain")
    result = checked.run(Job.model_validate(JOB))
    unchecked = plain.run(Job.model_validate(JOB))
    record = json.loads(result.files[0].read_text())
    assert (record["use_safety_checker"], record["nsfw"], result.filtered) == (
        True,
        [False, False],
        [],
    )
    assert json.loads(unchecked.files[0].read_text())["use_safety_checker"] is False
    assert "nsfw" not in json.loads(unchecked.files[0].read_text())
    for kept, generated in zip(result.files[1:], unchecked.files[1:], strict=True):
        assert pixels(kept).std() > 1
        assert np.array_equal(pixels(kept), pixels(generated))


def test_an_unloadable_checker_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    settings = Settings(sd_safety_checker=True, sd_safety_checker_model=str(tmp_path / "none"))
    with pytest.raises(ModelUnavailable, match=r"SD_SAFETY_CHECKER_MODEL=.* could not be loaded"):
        SafetyChecker.load(settings, "cpu")


async def test_the_worker_refuses_to_start_without_its_checker(
    worker_settings: Settings, tmp_path: Path
) -> None:
    """One line naming the setting and exit 1, never a silent run without the checker."""
    missing = tmp_path / "no-checker"
    worker = WorkerProcess(
        worker_settings,
        tmp_path / "worker.log",
        SD_SAFETY_CHECKER="1",
        SD_SAFETY_CHECKER_MODEL=str(missing),
    )
    assert await worker.wait(120) == 1
    errors = [line for line in worker.log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"SD_SAFETY_CHECKER_MODEL={missing}" in errors[0], worker.log


@pytest.mark.broker
async def test_the_done_event_says_which_images_were_filtered(
    settings: Settings,
    events: EventLog,
    checkers: dict[str, Path],
    loaded_model: LoadedModel,
) -> None:
    job_id = uuid.uuid4().hex
    await publish(settings.amqp_url, settings.queue_name, {**JOB, "id": job_id}, message_id=job_id)
    runner = runner_with(checkers["flags all"], loaded_model, settings.images_dir)
    async with running(Consumer(settings, runner)):
        *_, done = await events.until_final(job_id, 60)
    assert done.state == "done" and done.filtered == [1, 2]
