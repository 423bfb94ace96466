"""A job whose files have all landed is done, even if its worker's `done` event never comes.

Workers send events without confirms, and a worker whose events connection is down drops them
(the job itself is unaffected). Without this, its card would stay "running" and a synchronous
API request would wait API_WAIT_S for an image that is already in the folder. The gallery's
watcher reports every PNG that lands; for a job this process knows as unfinished, the files are
checked (the sidecar's count, each image whole) and a `done` event enters the hub. The worker's
own `done` may follow: the registry keeps the first final event.
"""

import asyncio
from pathlib import Path

from sd_webui.events import EventHub, JobEvent
from sd_webui.image_files import job_stem, landed_job
from sd_webui.metadata import filtered_images


class DoneWhenLanded:
    """A Gallery.on_landed listener for one folder and hub."""

    def __init__(self, folder: Path, hub: EventHub) -> None:
        self.folder, self.hub = folder, hub

    async def __call__(self, names: list[str]) -> None:
        for job_id in {job_stem(name) for name in names}:
            latest = self.hub.registry.latest(job_id)
            if latest is None or latest.final:
                continue
            landed = await asyncio.to_thread(landed_job, self.folder, job_id)
            if landed is not None and not (self.hub.registry.latest(job_id) or latest).final:
                record, files = landed
                filtered = filtered_images(record) or None
                self.hub.publish(JobEvent(id=job_id, state="done", files=files, filtered=filtered))
