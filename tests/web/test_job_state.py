"""The job cards' logic without a browser: how events move a card, "jobs ahead", the session
limit and the Advanced fields checked on the server."""

from collections.abc import Iterator

import pytest

from sd_webui import job_state, publishing
from sd_webui.embedded import EmbeddedQueue
from sd_webui.events import JobEvent, get_hub
from sd_webui.jobs import build_jobs
from sd_webui.settings import Settings, get_settings
from sd_webui.state import PromptState, form_number, submit


def moved(card: job_state.JobCard, *events: tuple[str, dict]) -> job_state.JobCard:
    for state, fields in events:
        card = job_state.applied(card, JobEvent(id=card.id, state=state, **fields))
    return card


def test_a_card_moves_forward_only() -> None:
    card = job_state.JobCard(id="a" * 32, prompt="green dog")
    running = moved(card, ("started", {"worker": "w:1"}), ("progress", {"step": 2, "steps": 4}))
    assert (running.state, running.worker, running.step, running.percent) == (
        "running",
        "w:1",
        2,
        50,
    )
    assert moved(running, ("queued", {})) == running  # a late `queued` never goes back
    done = moved(running, ("done", {"files": ["x.json", "x-1.png", "x-2.png"]}))
    assert (done.state, done.images) == ("done", ["/images/x-1.png", "/images/x-2.png"])
    assert moved(done, ("progress", {"step": 3, "steps": 4}), ("failed", {"error": "e"})) == done
    failed = moved(running, ("failed", {"error": "FileExistsError: boom"}))
    assert (failed.state, failed.error) == ("failed", "FileExistsError: boom")


def test_a_done_card_knows_which_images_were_filtered() -> None:
    card = job_state.JobCard(id="f" * 32, count=2)
    files = ["x.json", "x-1.png", "x-2.png"]
    done = moved(card, ("done", {"files": files, "filtered": [2, 7]}))  # 7: no such image
    assert (done.images, done.filtered) == (
        ["/images/x-1.png", "/images/x-2.png"],
        ["/images/x-2.png"],
    )
    assert moved(card, ("done", {"files": files})).filtered == []


def test_progress_of_images_made_one_after_another() -> None:
    card = job_state.JobCard(id="b" * 32, count=2)
    second = moved(card, ("progress", {"step": 2, "steps": 4, "image": 2}))
    assert (second.image, second.percent) == (2, 75)


def test_a_card_restored_from_the_registry_names_its_worker() -> None:
    """The registry's latest event of a running job is a progress that carries the worker of
    its `started` on; a card rebuilt from it (a new session after a replica died) shows it."""
    registry = get_hub().registry
    job_id = "c" * 32
    registry.record(JobEvent(id=job_id, state="started", worker="gpu-2:7"))
    registry.record(JobEvent(id=job_id, state="progress", step=3, steps=8))
    card = job_state.restored(job_state.JobCard(id=job_id), registry.latest(job_id))
    assert (card.state, card.worker, card.step) == ("running", "gpu-2:7", 3)


def test_jobs_ahead_count_down_with_every_first_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_state, "get_embedded_queue", lambda: None)
    counter = job_state.start_counter()
    card = job_state.JobCard(id="c" * 32, waiting_then=3, starts_then=counter.count)
    hub = get_hub()
    hub.publish(JobEvent(id="d" * 32, state="started", attempt=1))
    hub.publish(JobEvent(id="e" * 32, state="started", attempt=2))  # a retry: not a new start
    assert job_state.with_ahead(card).ahead == 2
    for letter in "fgh":
        hub.publish(JobEvent(id=letter * 32, state="started"))
    assert job_state.with_ahead(card).ahead == 0


@pytest.fixture
def embedded(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedQueue]:
    """The embedded queue as the page's sink, its model never loaded (jobs only wait)."""
    monkeypatch.delenv("AMQP_URL", raising=False)
    monkeypatch.setenv("MAX_PENDING_PER_SESSION", "3")
    get_settings.cache_clear()
    queue = EmbeddedQueue(Settings(), cancelled=set())
    publishing.set_sink(queue)
    yield queue
    publishing.set_sink(None)
    get_settings.cache_clear()


async def test_embedded_jobs_ahead_come_from_the_queue(embedded: EmbeddedQueue) -> None:
    await embedded.publish(build_jobs("first", 2, in_parallel=True))
    (job,) = build_jobs("third", 1, in_parallel=True)
    await embedded.publish([job])
    assert job_state.with_ahead(job_state.JobCard(id=job.id)).ahead == 2


async def test_the_session_limit_publishes_nothing(embedded: EmbeddedQueue) -> None:
    level, message, jobs = await submit("green dog", 2, True, pending=2)
    assert (level, jobs) == ("warning", ())
    assert "you have 2 unfinished jobs and at most 3" in message
    assert embedded.waiting() == 0
    level, _, jobs = await submit("green dog", 1, True, pending=2)
    assert level == "success" and embedded.waiting() == 1
    assert get_hub().registry.latest(jobs[0].id).state == "queued"


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("width", "300", "multiple of 8"),
        ("height", "2048", "less than or equal to 1024"),
        ("steps", "4.5", "valid integer"),
        ("seed", "-1", "greater than or equal to 0"),
        ("guidance", "lots", "guidance_scale"),
    ],
)
async def test_advanced_fields_are_checked_on_the_server(
    embedded: EmbeddedQueue, field: str, value: str, says: str
) -> None:
    form = PromptState(_reflex_internal_init=True)
    setattr(form, field, value)
    level, message, _ = await submit("green dog", 1, True, **form.options())
    assert level == "error" and says in message, message
    assert embedded.waiting() == 0


async def test_a_job_over_the_cap_is_refused_from_the_page(
    embedded: EmbeddedQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 images of 1024x1024 (64 units) against MAX_JOB_UNITS 32: one line saying why."""
    monkeypatch.setenv("MAX_JOB_UNITS", "32")
    get_settings.cache_clear()  # the fixture clears it again afterwards
    form = PromptState(_reflex_internal_init=True)
    form.width, form.height = "1024", "1024"
    level, message, _ = await submit("green dog", 4, False, **form.options())
    assert level == "error" and "too large for this server" in message, message
    assert embedded.waiting() == 0
    level, _, jobs = await submit("green dog", 3, True, **form.options())  # 3 jobs of 16 units
    assert level == "success" and len(jobs) == 3


def test_form_numbers() -> None:
    assert [form_number(text) for text in ("", " 42 ", "7.5", "x")] == [None, 42, 7.5, "x"]
