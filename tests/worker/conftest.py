"""Worker fixtures: the tiny demo model loaded once for the in-process tests, and settings with
an events exchange and cancel stream of their own for the tests that follow job events."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from events_support import EventLog, delete_event_names, following, with_event_names

from sd_webui.settings import Settings
from sd_webui.worker.model_source import locate_model
from sd_webui.worker.pipeline import LoadedModel
from sd_webui.worker.runner import JobRunner


@pytest.fixture(scope="session")
def loaded_model(demo_model: Path) -> LoadedModel:
    """The demo model loaded once for all in-process tests, each with its own JobRunner."""
    settings = Settings(sd_model=str(demo_model))
    return JobRunner.load(settings, locate_model(settings.sd_model)).model


@pytest.fixture
async def settings(worker_settings: Settings) -> AsyncIterator[Settings]:
    named = with_event_names(worker_settings)
    yield named
    await delete_event_names(named)


@pytest.fixture
async def events(settings: Settings) -> AsyncIterator[EventLog]:
    async with following(settings) as log:
        yield log
