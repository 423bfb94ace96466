"""Which API caller queued which jobs: for the pending limit (the same MAX_PENDING_PER_SESSION
as a browser tab), and for AUTOMATIC1111's `progress` and `interrupt`, which mean "my current
request" (A1111 runs one request at a time; here a caller's oldest unfinished one)."""

from collections import deque
from datetime import datetime
from functools import lru_cache

from sd_webui.events import JobEvent, JobRegistry, get_hub
from sd_webui.settings import get_settings

MAX_REQUESTS_KEPT = 50  # finished requests a caller keeps (progress reads the latest)


class CallerJobs:
    """Per caller, its requests (each a tuple of job ids), oldest first, and its unfinished
    jobs; as a hub listener it takes finished jobs off that set (so the pending count of every
    request is one `len`, however many of the caller's requests wait) and keeps when each job
    started, for the ETA."""

    def __init__(self, registry: JobRegistry) -> None:
        self.registry = registry
        self._requests: dict[str, deque[tuple[str, ...]]] = {}
        self._owner: dict[str, str] = {}
        self._unfinished: dict[str, set[str]] = {}
        self._in_flight: set[str] = set()  # added, not yet queued: counted as pending
        self.started: dict[str, datetime] = {}

    def __call__(self, event: JobEvent) -> None:
        owner = self._owner.get(event.id)
        if owner is None:
            return
        if event.state == "started":
            self.started.setdefault(event.id, event.at)
        elif event.final:
            self._unfinished[owner].discard(event.id)

    def add(self, caller: str, job_ids: list[str]) -> None:
        """A request about to be queued; pending from now on, so that concurrent requests of
        one caller cannot pass the limit together. `queued()` or `discard()` follows."""
        requests = self._requests.setdefault(caller, deque())
        self._forget_finished(requests)
        requests.append(tuple(job_ids))
        self._owner.update(dict.fromkeys(job_ids, caller))
        self._unfinished.setdefault(caller, set()).update(job_ids)
        self._in_flight.update(job_ids)

    def queued(self, job_ids: list[str]) -> None:
        self._in_flight.difference_update(job_ids)

    def discard(self, caller: str, job_ids: list[str]) -> None:
        """A request that was not queued after all."""
        self._requests[caller].remove(tuple(job_ids))
        self._unfinished[caller].difference_update(job_ids)
        self._in_flight.difference_update(job_ids)
        for job_id in job_ids:
            self._owner.pop(job_id, None)

    def unfinished(self, job_id: str) -> bool:
        """Queued or running as far as this process knows; a job the registry no longer holds
        (1000 newer jobs came since) counts as finished."""
        if job_id in self._in_flight:
            return True
        latest = self.registry.latest(job_id)
        return latest is not None and not latest.final

    def pending(self, caller: str) -> int:
        """The caller's unfinished jobs, as a tab's pending count. At the limit, the set is
        checked against the registry first: a job it no longer holds counts as finished."""
        unfinished = self._unfinished.get(caller, set())
        if len(unfinished) >= get_settings().max_pending_per_session:
            unfinished.intersection_update(
                [job_id for job_id in unfinished if self.unfinished(job_id)]
            )
        return len(unfinished)

    def current(self, caller: str) -> tuple[str, ...]:
        """The caller's oldest unfinished request, else its latest one (empty if none)."""
        requests = self._requests.get(caller, ())
        for request in requests:
            if any(self.unfinished(job_id) for job_id in request):
                return request
        return requests[-1] if requests else ()

    def _forget_finished(self, requests: deque[tuple[str, ...]]) -> None:
        while len(requests) > MAX_REQUESTS_KEPT and not any(
            self.unfinished(job_id) for job_id in requests[0]
        ):
            for job_id in requests.popleft():
                self._owner.pop(job_id, None)
                self.started.pop(job_id, None)


@lru_cache
def get_callers() -> CallerJobs:
    """The process's record, listening to the hub from its first use."""
    hub = get_hub()
    callers = CallerJobs(hub.registry)
    hub.add_listener(callers)
    return callers
