"""Per-caller job records: pending counts, the current request, eviction from the registry."""

from collections.abc import Iterator

import pytest

from sd_webui.api.callers import CallerJobs
from sd_webui.events import EventHub, JobEvent, JobRegistry
from sd_webui.settings import get_settings


@pytest.fixture
def hub_and_callers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[EventHub, CallerJobs]]:
    monkeypatch.setenv("MAX_PENDING_PER_SESSION", "3")
    get_settings.cache_clear()
    hub = EventHub(JobRegistry(size=4))
    callers = CallerJobs(hub.registry)
    hub.add_listener(callers)
    yield hub, callers
    get_settings.cache_clear()


def queue(hub: EventHub, callers: CallerJobs, caller: str, *ids: str) -> None:
    callers.add(caller, list(ids))
    for job_id in ids:
        hub.publish(JobEvent(id=job_id, state="queued"))
    callers.queued(list(ids))


def test_pending_counts_unfinished_jobs_per_caller(hub_and_callers):
    hub, callers = hub_and_callers
    queue(hub, callers, "key 1", "a", "b")
    queue(hub, callers, "key 2", "c")
    assert (callers.pending("key 1"), callers.pending("key 2")) == (2, 1)
    hub.publish(JobEvent(id="a", state="started", worker="w"))
    hub.publish(JobEvent(id="a", state="done", files=[]))
    hub.publish(JobEvent(id="c", state="cancelled"))
    assert (callers.pending("key 1"), callers.pending("key 2")) == (1, 0)
    assert "a" in callers.started and callers.current("key 1") == ("a", "b")


def test_a_request_not_queued_is_forgotten(hub_and_callers):
    _, callers = hub_and_callers
    callers.add("key 1", ["x", "y"])
    assert callers.pending("key 1") == 2 and callers.unfinished("x")  # counted while in flight
    callers.discard("key 1", ["x", "y"])
    assert callers.pending("key 1") == 0 and callers.current("key 1") == ()


def test_at_the_limit_jobs_the_registry_forgot_count_as_finished(hub_and_callers):
    hub, callers = hub_and_callers
    queue(hub, callers, "key 1", "old1", "old2", "old3")
    assert callers.pending("key 1") == 3
    for index in range(4):  # the registry keeps 4: the three old jobs are pushed out
        hub.publish(JobEvent(id=f"other{index}", state="queued"))
    assert callers.pending("key 1") == 0
