"""Contract 1 as the web app builds it: validation, the stop-list, parallel splitting, bodies."""

import json
from datetime import datetime

import pytest

from sd_webui.jobs import (
    NSFW_WARNING,
    EmptyPrompt,
    InvalidJob,
    StopWordPrompt,
    build_jobs,
    decode_job,
    has_stop_word,
)


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
