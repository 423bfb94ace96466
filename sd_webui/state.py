"""Reflex states of each tab: the prompt bar's values, the full view and the model's state.
Generate lives with the job cards (sd_webui/job_state.py), since every press makes cards; what
every tab shows alike (gallery, queue figures) is sd_webui/live_feed.py's."""

import dataclasses
import random
from datetime import UTC, datetime
from typing import Any, NamedTuple

import reflex as rx

from sd_webui.broker import QueueUnavailable
from sd_webui.image_files import Entry
from sd_webui.jobs import EmptyPrompt, InvalidJob, Job, StopWordPrompt, build_jobs
from sd_webui.metadata import UNKNOWN
from sd_webui.publishing import PendingLimit, enqueue, get_embedded_queue

IMAGE_ROUTE = "/images"
PROMPT_INPUT_ID = "prompt"
ADVANCED = "advanced"  # the value of the open "Advanced" accordion item
MAX_SEED = 2**32 - 1


@dataclasses.dataclass(frozen=True)
class Card:
    """One gallery image as the page shows it: display strings only."""

    name: str = ""
    path: str = ""
    job_id: str = ""
    created: str = ""
    prompt: str = UNKNOWN
    negative_prompt: str = ""
    model: str = UNKNOWN
    lora_base_model: str = UNKNOWN
    size: str = UNKNOWN
    width: str = UNKNOWN
    height: str = UNKNOWN
    seed: str = UNKNOWN
    steps: str = UNKNOWN
    guidance_scale: str = UNKNOWN
    filtered: bool = False  # the safety checker blacked it out: shown as a "filtered" tile


def _shown(value: object) -> str:
    """A number as text that reads well and, fed back by "Reuse settings", gives the same value."""
    if value is None:
        return UNKNOWN
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def card_of(entry: Entry) -> Card:
    info = entry.info
    return Card(
        name=entry.name,
        path=f"{IMAGE_ROUTE}/{entry.name}",
        job_id=entry.job_id,
        created=datetime.fromtimestamp(entry.mtime_ns / 1e9, UTC).isoformat(),
        prompt=info.prompt,
        negative_prompt=info.negative_prompt,
        model=info.model,
        lora_base_model=info.lora_base_model,
        size=info.size,
        width=_shown(info.width),
        height=_shown(info.height),
        seed=_shown(info.seed),
        steps=_shown(info.steps),
        guidance_scale=_shown(info.guidance_scale),
        filtered=info.filtered,
    )


class Submitted(NamedTuple):
    """What one press of Generate (or Retry) did: a toast, and the jobs queued (none on refusal)."""

    level: str
    message: str
    jobs: tuple[Job, ...] = ()


async def submit(
    prompt: str, count: int, in_parallel: bool, *, pending: int = 0, **options: Any
) -> Submitted:
    """Validate and queue one press of Generate.

    Everything is checked here, on the server: a crafted websocket event with count 9, a
    2,000-character prompt or a width of 300 is refused like any other invalid job (contract 1,
    through build_jobs), and so is a press that would take the session (with `pending`
    unfinished jobs) past MAX_PENDING_PER_SESSION; nothing is published then. Each queued job
    enters the process's EventHub as `queued`, so a reloaded page finds it in the registry.
    """
    try:
        jobs = build_jobs(prompt, count, in_parallel, **options)
        await enqueue(jobs, pending=pending)
    except EmptyPrompt as error:
        return Submitted("info", str(error))
    except StopWordPrompt as error:
        return Submitted("warning", str(error))
    except InvalidJob as error:
        return Submitted("error", f"Not sent, the job is invalid: {error}")
    except PendingLimit as error:
        return Submitted(
            "warning",
            f"Not sent: you have {error.pending} unfinished jobs and at most {error.limit} may "
            "wait or run at a time. Wait for some to finish, or cancel some.",
        )
    except QueueUnavailable as error:
        return Submitted("error", f"The queue is unavailable, nothing was sent. {error}")
    images = "1 image" if count == 1 else f"{count} images"
    return Submitted("success", f"The task was added to the job queue ({images}).", tuple(jobs))


def form_number(text: str) -> int | float | str | None:
    """An Advanced field as the number it spells; empty is None (the default, or a random seed),
    and anything else is passed on as text for build_jobs to refuse with its reason."""
    text = text.strip()
    if not text:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class PromptState(rx.State):
    """The prompt bar and its "Advanced" panel (numbers kept as typed; checked on Generate)."""

    prompt: str = ""
    count: int = 1
    in_parallel: bool = True
    sending: bool = False
    advanced: str = ""  # ADVANCED while the panel is open
    negative_prompt: str = ""
    seed: str = ""
    steps: str = "1"
    width: str = "512"
    height: str = "512"
    guidance: str = "0"

    @rx.event
    def set_prompt(self, value: str) -> None:
        self.prompt = value

    @rx.event
    def set_count(self, value: list[int | float]) -> None:
        """The slider's value, kept as sent: `generate` refuses a crafted count outside 1-4."""
        self.count = int(value[0])

    @rx.event
    def set_in_parallel(self, value: bool) -> None:
        self.in_parallel = value

    @rx.event
    def set_advanced(self, value: str | list[str]) -> None:
        """The accordion's open item ("" when collapsed)."""
        self.advanced = value if isinstance(value, str) else "".join(value[:1])

    @rx.event
    def set_field(self, field: str, value: str) -> None:
        """One Advanced field; only those, so a crafted event cannot reach `sending`."""
        if field in ("negative_prompt", "seed", "steps", "width", "height", "guidance"):
            setattr(self, field, value)

    @rx.event
    def roll_seed(self) -> None:
        """The dice button: a random seed, shown so the image can be made again."""
        self.seed = str(random.randint(0, MAX_SEED))

    @rx.event
    def use_prompt(self, prompt: str) -> None:
        """ "Use this prompt" of the full view (which, as it closes, focuses the prompt box)."""
        self.prompt = prompt

    @rx.event
    def reuse(self, card: Card) -> None:
        """ "Reuse settings": every field from the image's metadata and one image, so Generate
        makes the same picture again (unknown values fall back to the defaults)."""
        known = {key: value for key, value in dataclasses.asdict(card).items() if value != UNKNOWN}
        self.prompt = known.get("prompt", self.prompt)
        self.negative_prompt = card.negative_prompt
        self.seed = known.get("seed", "")
        self.steps = known.get("steps", "1")
        self.width, self.height = known.get("width", "512"), known.get("height", "512")
        self.guidance = known.get("guidance_scale", "0")
        self.count, self.advanced = 1, ADVANCED

    def options(self) -> dict[str, Any]:
        """The Advanced fields for build_jobs; empty ones are left to the job's defaults."""
        fields = {
            "seed": form_number(self.seed),
            "steps": form_number(self.steps),
            "width": form_number(self.width),
            "height": form_number(self.height),
            "guidance_scale": form_number(self.guidance),
        }
        options = {key: value for key, value in fields.items() if value is not None}
        return {"negative_prompt": self.negative_prompt, **options}


class ViewerState(rx.State):
    """This tab's full view of one image (the gallery itself is sd_webui/live_feed.py's)."""

    selected: Card = Card()
    viewing: bool = False

    @rx.event
    def view(self, card: Card) -> None:
        self.selected, self.viewing = card, True

    @rx.event
    def set_viewing(self, value: bool) -> None:
        self.viewing = value


class ModelState(rx.State):
    """The embedded worker's model as the page shows it: "loading", "ready" or "failed".

    Empty with `AMQP_URL` set: then the model lives in the `sd-worker` processes.
    """

    status: str = ""
    problem: str = ""

    @rx.event(background=True)
    async def follow(self):
        """Show the model's state now, and again once loading has ended."""
        queue = get_embedded_queue()
        if queue is None:
            return
        async with self:
            self.status, self.problem = str(queue.status), queue.problem
        if queue.status == "loading":
            await queue.status_changed.wait()
            async with self:
                self.status, self.problem = str(queue.status), queue.problem
