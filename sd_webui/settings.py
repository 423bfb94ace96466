"""Contract 3: every knob is an environment variable, read once into one Settings object."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Configuration shared by the web app and the worker (docs/contracts.md, "Configuration")."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    amqp_url: str | None = Field(
        default=None, description="RabbitMQ URL; unset runs the embedded in-process queue."
    )
    queue_name: str = "tasks"
    redis_url: str | None = Field(
        default=None, description="Redis for several web replicas (Reflex reads it too)."
    )
    images_dir: Path = Path("public/images")
    gallery_size: int = Field(default=24, ge=1, le=500)
    sd_model: str = "stabilityai/sd-turbo"
    sd_device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    exit_after_one_task: bool = False
    shutdown_grace_s: float = Field(default=100.0, gt=0)
    # Worker liveness: a delivery held this long with no step and no settle means it is stuck.
    stall_timeout_s: float = Field(default=1800.0, gt=0)
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    sd_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    sd_tiny_vae: bool = False
    sd_tiny_vae_model: str = "madebyollin/taesd"
    batch_jobs: int = Field(default=1, ge=1, le=16)
    max_pending_per_session: int = Field(default=8, ge=1)
    events_exchange: str = Field(
        default="sd.events", description="Durable topic exchange of job events (job.<id>.<state>)."
    )
    cancel_queue: str = Field(
        default="sd.cancellations", description="Stream queue every worker reads cancels from."
    )
    # The HTTP API (docs/api.md): keys, how long a synchronous request waits, body size.
    api_keys: str = Field(default="", description="Comma-separated keys; empty: the API is open.")
    api_keys_file: Path | None = Field(default=None, description="A file of keys, one per line.")
    api_wait_s: float = Field(default=600.0, gt=0)
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)

    @field_validator("amqp_url", "redis_url", "metrics_port", "api_keys_file", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """`AMQP_URL=` in a compose file or shell means "not set", not an empty URL."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def dead_letter_queue(self) -> str:
        """Where messages that break contract 1 go: `<queue>.dead`."""
        return f"{self.queue_name}.dead"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
