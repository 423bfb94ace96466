"""Contract 3: every knob is an environment variable, read once into one Settings object."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
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
    # torch, or openvino: the text encoder and UNet converted once (cached in SD_OPENVINO_CACHE,
    # default $HF_HOME/openvino) and run by OpenVINO on the CPU.
    sd_backend: Literal["torch", "openvino"] = "torch"
    sd_openvino_cache: Path | None = None
    # Each generated image checked by diffusers' safety checker; flagged ones are blacked out.
    sd_safety_checker: bool = False
    sd_safety_checker_model: str = "CompVis/stable-diffusion-safety-checker"
    # The prompt stop-list: one word or phrase a line (blank lines and `#` comments skipped).
    stop_words_file: Path | None = None
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
    # A job's size, capped at submit time so that the longest job fits a worker's shutdown grace
    # (count x width x height / 512^2 x (steps + 3), sd_webui/jobs.py job_units); 0: no cap.
    # The Kubernetes manifests set 32 for their CPU workers.
    max_job_units: float = Field(default=0.0, ge=0)
    # An S3 bucket (docs/deploy.md, "Kubernetes"): workers upload each job there before they
    # acknowledge it, web apps mirror its newest images into IMAGES_DIR. Unset: the shared folder.
    s3_bucket: str | None = None
    s3_endpoint: str | None = Field(default=None, description="Unset: AWS S3 itself.")
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = Field(default=None, description="Unset: boto3's own chain.")
    s3_secret_access_key: str | None = None
    s3_upload_retry_s: float = Field(default=120.0, gt=0)
    s3_mirror_keep: int = Field(default=1000, ge=1)
    s3_mirror_interval_s: float = Field(default=60.0, gt=0)
    s3_retention_days: int = Field(default=30, ge=0)

    @field_validator(
        "amqp_url",
        "redis_url",
        "metrics_port",
        "api_keys_file",
        "stop_words_file",
        "sd_openvino_cache",
        "s3_bucket",
        "s3_endpoint",
        "s3_access_key_id",
        "s3_secret_access_key",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """`AMQP_URL=` in a compose file or shell means "not set", not an empty URL."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("stop_words_file")
    @classmethod
    def _stop_words_readable(cls, value: Path | None) -> Path | None:
        """A list that cannot be read fails at start, not at the first prompt."""
        if value is not None:
            try:
                value.read_text("utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise ValueError(f"STOP_WORDS_FILE={value} cannot be read: {error}") from None
        return value

    @model_validator(mode="after")
    def _bucket_needs_the_broker(self) -> "Settings":
        """The bucket joins workers and web apps over RabbitMQ; the embedded worker writes
        IMAGES_DIR itself, which a mirror of the bucket would prune."""
        if self.s3_bucket is not None and self.amqp_url is None:
            raise ValueError("S3_BUCKET needs AMQP_URL (the embedded worker uploads nothing)")
        if self.s3_mirror_keep < self.gallery_size:
            raise ValueError("S3_MIRROR_KEEP must be at least GALLERY_SIZE")
        return self

    @property
    def dead_letter_queue(self) -> str:
        """Where messages that break contract 1 go: `<queue>.dead`."""
        return f"{self.queue_name}.dead"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
