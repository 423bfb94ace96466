"""Contract 1 as the web app builds it: validation, the stop-list, parallel splitting, bodies."""

import json
from datetime import datetime

import pytest

from sd_webui.jobs import (
    NSFW_WARNING,
    EmptyPrompt,
    InvalidJob,
    Job,
    JobTooLarge,
    StopWordPrompt,
    build_jobs,
    decode_job,
    job_units,
)
from sd_webui.settings import Settings, get_settings
from sd_webui.stop_list import has_stop_word


def test_one_job_of_count_n_when_not_in_parallel() -> None:
    (job,) = build_jobs("green dog", 3, in_parallel=False)
    assert job.count == 3
    assert len(job.id) == 32


def test_in_parallel_splits_into_n_jobs_of_one_each_with_its_own_id() -> None:
    jobs = build_jobs("green dog", 4, in_parallel=True)
    assert [job.count for job in jobs] == [1, 1, 1, 1]
    assert len({job.id for job in jobs}) == 4
    assert {job.prompt for job in jobs} == {"green dog"}


def test_in_parallel_with_one_image_is_one_job() -> None:
    assert len(build_jobs("green dog", 1, in_parallel=True)) == 1


def test_parallel_seeds_follow_the_single_job_seeds() -> None:
    jobs = build_jobs("green dog", 3, in_parallel=True, seed=10)
    assert [job.seed for job in jobs] == [10, 11, 12]


def test_body_is_exact_contract_json() -> None:
    (job,) = build_jobs("  green dog  ", 2, in_parallel=False)
    body = json.loads(job.body())
    submitted = body.pop("submitted_at")
    assert datetime.fromisoformat(submitted).tzinfo is not None
    assert body == {
        "prompt": "green dog",
        "count": 2,
        "id": job.id,
        "negative_prompt": "",
        "width": 512,
        "height": 512,
        "steps": 1,
        "guidance_scale": 0.0,
    }
    assert "seed" not in body


def test_body_is_readable_by_a_consumer_that_knows_prompt_and_count_only() -> None:
    (job,) = build_jobs("green dog", 2, in_parallel=False)
    body = json.loads(job.body())
    assert (body["prompt"], body["count"]) == ("green dog", 2)
    assert decode_job(b'{"prompt": "green dog", "count": 2}').count == 2


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_blank_prompt_sends_nothing(prompt: str) -> None:
    with pytest.raises(EmptyPrompt):
        build_jobs(prompt, 1, in_parallel=True)


def test_prompt_over_1000_characters_is_refused() -> None:
    build_jobs("a" * 1000, 1, in_parallel=True)
    with pytest.raises(InvalidJob, match="prompt"):
        build_jobs("a" * 1001, 1, in_parallel=True)


@pytest.mark.parametrize("count", [0, 5, -1, 99])
def test_count_outside_1_to_4_is_refused(count: int) -> None:
    with pytest.raises(InvalidJob, match="count"):
        build_jobs("green dog", count, in_parallel=False)


@pytest.mark.parametrize("count", ["2", 2.0, None, True])
def test_count_of_the_wrong_type_is_refused(count: object) -> None:
    with pytest.raises(InvalidJob):
        build_jobs("green dog", count, in_parallel=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "prompt", ["sex", "SEX on the beach", "a nude statue", "nsfw", "Porn.", "xxx-rated"]
)
def test_stop_list_words_are_refused_with_the_warning(prompt: str) -> None:
    assert has_stop_word(prompt)
    with pytest.raises(StopWordPrompt, match="NSFW"):
        build_jobs(prompt, 1, in_parallel=True)
    assert NSFW_WARNING == "Please don't use this tool for creating NSFW content."


@pytest.mark.parametrize(
    "prompt", ["Essex countryside", "Sussex", "sextant on a ship", "Middlesex", "unsexy"]
)
def test_stop_list_matches_whole_words_only(prompt: str) -> None:
    assert not has_stop_word(prompt)
    assert build_jobs(prompt, 1, in_parallel=True)[0].prompt == prompt


@pytest.mark.parametrize(
    ("shape", "units"),
    [
        ({}, 4),  # one 512x512 image at 1 step: the step and its decode (3 steps' worth)
        ({"count": 4, "steps": 5}, 32),
        ({"width": 1024, "height": 1024}, 16),
        ({"width": 256, "height": 256, "steps": 1}, 1),
    ],
)
def test_a_jobs_units_count_its_steps_and_decodes_in_512_images(shape: dict, units: float) -> None:
    assert job_units(Job(prompt="green dog", **shape)) == units


@pytest.fixture
def max_job_units(monkeypatch: pytest.MonkeyPatch):
    """Set MAX_JOB_UNITS for build_jobs (which reads the process's settings)."""

    def set_cap(value: str) -> None:
        monkeypatch.setenv("MAX_JOB_UNITS", value)
        get_settings.cache_clear()

    yield set_cap
    monkeypatch.delenv("MAX_JOB_UNITS", raising=False)
    get_settings.cache_clear()


def test_a_job_over_max_job_units_is_refused_saying_what_to_change(max_job_units) -> None:
    max_job_units("32")
    assert build_jobs("green dog", 4, in_parallel=False, steps=5)  # exactly 32: accepted
    with pytest.raises(JobTooLarge) as refused:
        build_jobs("green dog", 4, in_parallel=False, steps=6, width=512, height=512)
    message = str(refused.value)
    assert "4 images of 512x512 at 6 steps is 36 units" in message
    assert "MAX_JOB_UNITS is 32" in message and "fewer images or steps" in message
    assert isinstance(refused.value, InvalidJob)  # every door answers it as a bad request


def test_in_parallel_each_split_job_is_measured_alone(max_job_units) -> None:
    """Four workers share a parallel job: each count-1 job must fit, not their sum."""
    max_job_units("16")
    jobs = build_jobs("green dog", 4, in_parallel=True, width=1024, height=1024)
    assert [job_units(job) for job in jobs] == [16, 16, 16, 16]
    with pytest.raises(JobTooLarge):
        build_jobs("green dog", 4, in_parallel=False, width=1024, height=1024)


def test_max_job_units_zero_is_no_cap(max_job_units) -> None:
    max_job_units("0")
    (job,) = build_jobs("green dog", 4, in_parallel=False, width=1024, height=1024, steps=50)
    assert job_units(job) == 4 * 4 * 53


@pytest.fixture
def stop_words_file(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """Point STOP_WORDS_FILE at a file with `text` for build_jobs and has_stop_word."""

    def use(text: str):
        path = tmp_path / "stop-words.txt"
        path.write_text(text)
        monkeypatch.setenv("STOP_WORDS_FILE", str(path))
        get_settings.cache_clear()
        return path

    yield use
    monkeypatch.delenv("STOP_WORDS_FILE", raising=False)
    get_settings.cache_clear()


def test_stop_words_file_replaces_the_list(stop_words_file) -> None:
    stop_words_file("# our list\nballoon\n\nred  moon   # a phrase\n")
    with pytest.raises(StopWordPrompt):
        build_jobs("a Balloon over the sea", 1, in_parallel=False)
    assert has_stop_word("a RED\tmoon rising")  # any spacing between a phrase's words
    assert not has_stop_word("a red sun, a moon")  # the phrase, not its words apart
    assert not has_stop_word("balloons")  # whole words only
    assert not has_stop_word("a nude statue")  # the built-in list is replaced, not extended
    assert build_jobs("a nude statue", 1, in_parallel=False)


def test_an_empty_stop_words_file_refuses_nothing(stop_words_file) -> None:
    stop_words_file("# nothing yet\n")
    assert build_jobs("nsfw", 1, in_parallel=False)


def test_an_unreadable_stop_words_file_fails_at_start(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"STOP_WORDS_FILE=.* cannot be read"):
        Settings(stop_words_file=tmp_path / "missing.txt")
