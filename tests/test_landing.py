"""Jobs the folder shows done: the `done` a lost worker event would have said, from the files."""

import asyncio
from pathlib import Path

import pytest

from sd_webui.api.waiting import until_final
from sd_webui.events import JobEvent, get_hub
from sd_webui.gallery import Gallery
from sd_webui.jobs import Job
from sd_webui.landing import DoneWhenLanded
from tests.conftest import write_finished_job


async def test_a_waiting_request_ends_when_the_files_land(tmp_path: Path):
    hub = get_hub()
    gallery = Gallery(tmp_path, 4)
    gallery.on_landed.append(DoneWhenLanded(gallery.index.folder, hub))
    watcher = asyncio.create_task(gallery.watch())
    try:
        await asyncio.wait_for(gallery.wait_for_change(0), 10)  # the first scan
        waited, stranger = Job(prompt="a kept promise", count=2), Job(prompt="not ours")
        hub.publish(JobEvent(id=waited.id, state="queued"))
        waiting = asyncio.create_task(until_final([waited.id], 20))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        write_finished_job(tmp_path, stranger)
        write_finished_job(tmp_path, waited)
        final = (await waiting)[waited.id]
        assert final.state == "done"
        assert final.files == [f"{waited.id}.json", f"{waited.id}-1.png", f"{waited.id}-2.png"]
        assert hub.registry.latest(stranger.id) is None  # a job this process never knew
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def test_waiting_gives_up_after_its_time():
    job = Job(prompt="never")
    get_hub().publish(JobEvent(id=job.id, state="queued"))
    with pytest.raises(TimeoutError):
        await until_final([job.id], 0.2)
