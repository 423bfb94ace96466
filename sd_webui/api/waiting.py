"""Waiting for jobs without a thread or a poll: a request subscribes to its jobs' events in the
process's EventHub and awaits them, so thousands of waiting requests cost a queue each.

The registry is read after subscribing (both on the event loop, with nothing awaited between),
so an event that came before the request started waiting is not missed.
"""

import asyncio
from collections.abc import AsyncIterator

from sd_webui.events import JobEvent, get_hub

HEARTBEAT_S = 15.0


async def until_final(job_ids: list[str], wait_s: float) -> dict[str, JobEvent]:
    """The final event of every job; raises TimeoutError after `wait_s` seconds (the jobs go on).

    The final state is the registry's, as the page shows it: a late duplicate cannot change it.
    """
    hub = get_hub()
    queues = {job_id: hub.subscribe(job_id) for job_id in job_ids}
    try:
        finals: dict[str, JobEvent] = {}
        async with asyncio.timeout(wait_s):
            for job_id, queue in queues.items():
                while (latest := hub.registry.latest(job_id)) is None or not latest.final:
                    await queue.get()
                finals[job_id] = latest
        return finals
    finally:
        for job_id, queue in queues.items():
            hub.unsubscribe(queue, job_id)


async def follow(job_id: str, known: JobEvent) -> AsyncIterator[JobEvent | None]:
    """The job's latest event now (`known` if the registry has none), then each change until a
    final one; None every HEARTBEAT_S without news (a Server-Sent Events keep-alive)."""
    hub = get_hub()
    queue = hub.subscribe(job_id)
    try:
        shown = hub.registry.latest(job_id) or known
        yield shown
        while not shown.final:
            try:
                async with asyncio.timeout(HEARTBEAT_S):
                    await queue.get()
            except TimeoutError:
                yield None
                continue
            latest = hub.registry.latest(job_id)
            if latest is not None and latest != shown:
                shown = latest
                yield shown
    finally:
        hub.unsubscribe(queue, job_id)
