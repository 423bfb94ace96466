"""Contract 1: the job message on queue `tasks`, its validation and the prompt stop-list.

The same model is used by the web app (to build what it publishes) and by the worker (to
check what it consumes), so the two can never disagree on what a valid job is.
"""

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from sd_webui.settings import get_settings
from sd_webui.stop_list import has_stop_word

MAX_PROMPT_CHARS = 1000
MAX_COUNT = 4
# Decoding an image costs about three UNet steps of it on a CPU (bench/inference.py: 89.7 s of
# SD VAE decoder against 29.7 s for the UNet step at 512x512), so a job's size counts it so.
DECODE_UNITS = 3
NSFW_WARNING = "Please don't use this tool for creating NSFW content."

_JOB_ID_RE = re.compile(
    r"^(?:[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)


class InvalidJob(ValueError):
    """A message that breaks contract 1; `str()` is a reason fit for a user or a header, and
    `field` the field at fault (None for the body as a whole)."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.field = field


class EmptyPrompt(InvalidJob):
    """Nothing to generate: the page sends nothing and says so gently."""


class StopWordPrompt(InvalidJob):
    """The prompt hit the stop-list: a warning, and nothing is published."""


class JobTooLarge(InvalidJob):
    """More work than MAX_JOB_UNITS allows: a worker could not finish it within its grace."""


def new_job_id() -> str:
    """A fresh job id: uuid4 hex, which is also the file stem of the job's outputs."""
    return uuid.uuid4().hex


def is_job_id(value: object) -> bool:
    """A uuid as contract 1 allows it: 32 hex digits or the canonical dashed form."""
    return isinstance(value, str) and _JOB_ID_RE.fullmatch(value) is not None


def _check_job_id(value: str) -> str:
    if not is_job_id(value):
        raise ValueError("id must be a uuid (32 hex digits or the canonical dashed form)")
    return value


def _multiple_of_8(value: int) -> int:
    if value % 8:
        raise ValueError("must be a multiple of 8")
    return value


Side = Annotated[StrictInt, Field(ge=256, le=1024), AfterValidator(_multiple_of_8)]


class JobSettings(BaseModel):
    """What a job asks for: the fields a caller chooses (the page, the jobs API)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True, frozen=True)

    prompt: StrictStr = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    count: StrictInt = Field(default=1, ge=1, le=MAX_COUNT)
    negative_prompt: StrictStr = Field(default="", max_length=MAX_PROMPT_CHARS)
    seed: StrictInt | None = Field(default=None, ge=0, le=2**32 - 1)
    width: Side = 512
    height: Side = 512
    steps: StrictInt = Field(default=1, ge=1, le=50)
    guidance_scale: StrictFloat | StrictInt = Field(default=0.0, ge=0, le=20)


class Job(JobSettings):
    """One generation request: `prompt` and `count` are all an old worker reads."""

    id: Annotated[StrictStr, AfterValidator(_check_job_id)] = Field(default_factory=new_job_id)
    submitted_at: datetime | None = None

    def body(self) -> bytes:
        """The UTF-8 JSON body to publish; unset optional fields are left out."""
        return self.model_dump_json(exclude_none=True).encode()


def job_units(job: JobSettings) -> float:
    """A job's size: its denoising steps and its decodes, counted in 512x512 images."""
    return job.count * job.width * job.height / 512**2 * (job.steps + DECODE_UNITS)


def check_job_size(job: JobSettings, max_units: float) -> None:
    """Refuse a job over MAX_JOB_UNITS (0: no cap), saying what to ask for instead. Jobs are
    capped so that the longest one a worker may take fits its shutdown grace."""
    units = job_units(job)
    if max_units and units > max_units:
        images = f"{job.count} image{'s' if job.count > 1 else ''}"
        steps = f"{job.steps} step{'s' if job.steps > 1 else ''}"
        raise JobTooLarge(
            f"This job is too large for this server: {images} of {job.width}x{job.height} at "
            f"{steps} is {units:g} units of work, and MAX_JOB_UNITS is {max_units:g} (units = "
            f"images x width x height / 512x512 x (steps + {DECODE_UNITS})). Ask for fewer "
            "images or steps, or a smaller size."
        )


def invalid_job(error: ValidationError) -> InvalidJob:
    """The first error of a validation as an InvalidJob: `<field>: <message>`."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return InvalidJob(f"{where or 'body'}: {first['msg']}", str(first["loc"][0]) if where else None)


def parse_job(data: dict[str, Any]) -> Job:
    """Validate a decoded message; raises InvalidJob with a one-line reason."""
    try:
        return Job.model_validate(data)
    except ValidationError as error:
        raise invalid_job(error) from None


def decode_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a raw AMQP body; raises InvalidJob for any other bytes.

    Besides malformed JSON and UTF-8, the decoder raises ValueError for an integer beyond
    Python's digit limit and RecursionError for deep nesting: all are the body's fault.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise InvalidJob(f"body is not valid UTF-8 JSON: {str(error)[:200]}") from None
    if not isinstance(data, dict):
        raise InvalidJob("body must be a JSON object")
    return data


def decode_job(body: bytes) -> Job:
    """Parse a raw AMQP body (old `{"prompt", "count"}` or the full contract-1 form)."""
    return parse_job(decode_body(body))


def build_jobs(prompt: str, count: int, in_parallel: bool, **options: Any) -> list[Job]:
    """The messages for one press of Generate.

    In parallel with count N > 1: N jobs of count 1, each its own id (and, when a seed is
    given, seeds seed, seed+1, ... as one job of N would use), so N workers share the work;
    otherwise one job of count N. Raises EmptyPrompt, StopWordPrompt, JobTooLarge (each job
    against MAX_JOB_UNITS) or InvalidJob before anything is published.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise EmptyPrompt("Type a prompt first.", "prompt")
    if has_stop_word(prompt):
        raise StopWordPrompt(NSFW_WARNING, "prompt")
    job = parse_job(
        {"prompt": prompt, "count": count, "submitted_at": datetime.now(UTC), **options}
    )
    if not in_parallel or job.count == 1:
        check_job_size(job, get_settings().max_job_units)
        return [job]
    jobs = [
        job.model_copy(
            update={
                "count": 1,
                "id": new_job_id(),
                "seed": None if job.seed is None else job.seed + index,
            }
        )
        for index in range(job.count)
    ]
    check_job_size(jobs[0], get_settings().max_job_units)
    return jobs
