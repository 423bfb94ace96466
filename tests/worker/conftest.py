"""Worker fixtures: the tiny demo model loaded once for the in-process tests."""

from pathlib import Path

import pytest

from sd_webui.settings import Settings
from sd_webui.worker.model_source import locate_model
from sd_webui.worker.pipeline import LoadedModel
from sd_webui.worker.runner import JobRunner


@pytest.fixture(scope="session")
def loaded_model(demo_model: Path) -> LoadedModel:
    """The demo model loaded once for all in-process tests, each with its own JobRunner."""
    settings = Settings(sd_model=str(demo_model))
    return JobRunner.load(settings, locate_model(settings.sd_model)).model
