"""Contract 3: every variable, its default and its validation."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from sd_webui.settings import Settings, get_settings

VARIABLES = ("AMQP_URL", "QUEUE_NAME", "IMAGES_DIR", "GALLERY_SIZE", "SD_MODEL", "SD_DEVICE")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*VARIABLES, "EXIT_AFTER_ONE_TASK"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.amqp_url is None
    assert settings.queue_name == "tasks"
    assert settings.images_dir == Path("public/images")
    assert settings.gallery_size == 24
    assert settings.sd_model == "stabilityai/sd-turbo"
    assert settings.sd_device == "auto"
    assert settings.dead_letter_queue == "tasks.dead"


def test_environment_overrides(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("AMQP_URL", "amqp://u:p@broker:5672/")
    clean_env.setenv("QUEUE_NAME", "jobs")
    clean_env.setenv("IMAGES_DIR", str(tmp_path))
    clean_env.setenv("GALLERY_SIZE", "8")
    clean_env.setenv("EXIT_AFTER_ONE_TASK", "1")
    settings = Settings()
    assert settings.amqp_url == "amqp://u:p@broker:5672/"
    assert settings.queue_name == "jobs"
    assert settings.dead_letter_queue == "jobs.dead"
    assert settings.images_dir == tmp_path
    assert settings.gallery_size == 8
    assert settings.exit_after_one_task is True


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_amqp_url_means_unset(clean_env: pytest.MonkeyPatch, blank: str) -> None:
    clean_env.setenv("AMQP_URL", blank)
    assert Settings().amqp_url is None


@pytest.mark.parametrize(("name", "value"), [("GALLERY_SIZE", "0"), ("SD_DEVICE", "tpu")])
def test_invalid_values_are_refused(clean_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_get_settings_is_read_once(clean_env: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    try:
        clean_env.setenv("QUEUE_NAME", "first")
        first = get_settings()
        clean_env.setenv("QUEUE_NAME", "second")
        assert get_settings() is first
        assert first.queue_name == "first"
    finally:
        get_settings.cache_clear()
