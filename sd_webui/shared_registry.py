"""With `REDIS_URL`, the job registry that every web replica shares.

Each replica has its own EventHub and JobRegistry, fed by its own events subscriber: every
replica sees every worker event. What one replica cannot see is another's `queued` (a job is
announced in the process that published it), nor anything from before it started. So each
replica also writes every event it records into Redis, and a tab or API request that asks about
jobs this process does not know (a tab that reconnected here from a lost replica, a replica
started after the job) reads them back with `recall` first.

In Redis each job is one hash (`event`, `state`, `worker`) merged by a script with the
registry's own rules (a final event sticks, `queued` never hides a worker's event, the worker
that started a job stays known), kept SHARED_TTL_S and at most SHARED_SIZE jobs. Redis being
down costs only that sharing: events are kept (at most PENDING_EVENTS) and written once it is
back, and `recall` answers from this process alone meanwhile.
"""

import asyncio
import logging
from functools import lru_cache

import redis.asyncio as redis
from pydantic import ValidationError
from redis.exceptions import RedisError

from sd_webui.events import JobEvent, JobRegistry, get_hub
from sd_webui.settings import get_settings

log = logging.getLogger(__name__)

KEY_PREFIX = "sd-webui:job:"
INDEX_KEY = "sd-webui:jobs"  # job keys by last update, to drop the oldest beyond SHARED_SIZE
SHARED_SIZE = 10_000
SHARED_TTL_S = 24 * 3600
PENDING_EVENTS = 10_000
RETRY_S = 1.0
TIMEOUT_S = 2.0

# KEYS: the job's key, INDEX_KEY. ARGV: event JSON, state, worker ("" if none), TTL, the
# event's time, size.
RECORD = """
local known = redis.call('HGET', KEYS[1], 'state')
if known == 'done' or known == 'failed' or known == 'cancelled' then return 0 end
if known and ARGV[2] == 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'event', ARGV[1], 'state', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'worker', ARGV[3]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], KEYS[1])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[6])
if excess > 0 then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
  redis.call('DEL', unpack(oldest))
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, excess - 1)
end
return 1
"""


def newer(remote: JobEvent, known: JobEvent | None) -> bool:
    """Whether Redis's event tells more than this process's own."""
    if known is None:
        return True
    return not known.final and (remote.final or remote.at > known.at)


class SharedRegistry:
    """This process's side of the shared registry: a hub listener and a writer task."""

    def __init__(self, url: str, local: JobRegistry) -> None:
        self.client = redis.Redis.from_url(
            url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
        )
        self.local = local
        self._record = self.client.register_script(RECORD)
        self._pending: asyncio.Queue[JobEvent] = asyncio.Queue(PENDING_EVENTS)

    def __call__(self, event: JobEvent) -> None:
        """A hub listener: queue the event for Redis (the oldest are dropped beyond the limit)."""
        if self._pending.full():
            self._pending.get_nowait()
        self._pending.put_nowait(event)

    async def run(self) -> None:
        """Write the queued events, in order, until cancelled (a lifespan task)."""
        batch: list[JobEvent] = []
        down = False
        while True:
            if not batch:
                batch = [await self._pending.get()]
                while not self._pending.empty():
                    batch.append(self._pending.get_nowait())
            try:
                await self._write(batch)
            except RedisError as error:
                if not down:
                    log.warning("shared registry: Redis unreachable (%s); retrying", error)
                down = True
                await asyncio.sleep(RETRY_S)
                continue
            if down:
                log.info("shared registry: Redis reachable again")
            down, batch = False, []

    async def write_now(self, events: list[JobEvent]) -> None:
        """Write `events` before returning (they are queued for the writer too, so Redis being
        down only delays them): a job announced here is known to every replica at once."""
        try:
            await self._write(events)
        except RedisError as error:
            log.warning("shared registry: Redis unreachable (%s); writing later", error)

    async def _write(self, batch: list[JobEvent]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for event in batch:
                at = event.at.timestamp()
                args = [event.body(), event.state, event.worker or "", SHARED_TTL_S, at]
                await self._record(
                    keys=[KEY_PREFIX + event.id, INDEX_KEY],
                    args=[*args, SHARED_SIZE],
                    client=pipe,
                )
            await pipe.execute()

    async def recall(self, job_ids: list[str]) -> None:
        """Bring this process's registry up to date with Redis for `job_ids`."""
        if not job_ids:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hmget(KEY_PREFIX + job_id, "event", "worker")
                found = await pipe.execute()
        except RedisError as error:
            log.warning("shared registry: Redis unreachable (%s); this replica's jobs only", error)
            return
        for raw, worker in found:
            if raw is None:
                continue
            try:
                remote = JobEvent.model_validate_json(raw)
            except ValidationError:
                continue  # not an event this app wrote
            if remote.worker is None and worker:
                remote = remote.model_copy(update={"worker": worker.decode()})
            if newer(remote, self.local.latest(remote.id)):
                self.local.record(remote)

    async def reachable(self) -> bool:
        """Whether Redis answers a ping now (within TIMEOUT_S)."""
        try:
            return bool(await self.client.ping())
        except RedisError:
            return False

    async def close(self) -> None:
        await self.client.aclose()


@lru_cache
def get_shared_registry() -> SharedRegistry | None:
    """The process's shared registry with REDIS_URL set (None without)."""
    url = get_settings().redis_url
    return None if url is None else SharedRegistry(url, get_hub().registry)


async def share_now(events: list[JobEvent]) -> None:
    """Make `events` known to other replicas before returning (nothing without REDIS_URL)."""
    if (shared := get_shared_registry()) is not None:
        await shared.write_now(events)


async def recall(job_ids: list[str]) -> None:
    """What other replicas recorded about `job_ids` (nothing to do without REDIS_URL)."""
    if (shared := get_shared_registry()) is not None:
        await shared.recall(job_ids)
