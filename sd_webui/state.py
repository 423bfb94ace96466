"""Reflex states: the prompt bar's values and Generate, and each tab's live copy of the gallery."""

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime

import reflex as rx
from reflex_base.registry import RegistrationContext

from sd_webui.broker import QueueUnavailable
from sd_webui.gallery import Entry, get_gallery
from sd_webui.jobs import EmptyPrompt, InvalidJob, StopWordPrompt, build_jobs
from sd_webui.metadata import UNKNOWN
from sd_webui.publishing import get_embedded_queue, get_sink

IMAGE_ROUTE = "/images"
PROMPT_INPUT_ID = "prompt"
# How often a tab's gallery loop, idle with no change to push, checks that its tab is still open.
CONNECTION_CHECK_S = 30.0


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
    seed: str = UNKNOWN
    steps: str = UNKNOWN
    guidance_scale: str = UNKNOWN


def _shown(value: object) -> str:
    return UNKNOWN if value is None else f"{value:g}" if isinstance(value, float) else str(value)


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
        seed=_shown(info.seed),
        steps=_shown(info.steps),
        guidance_scale=_shown(info.guidance_scale),
    )


async def submit(prompt: str, count: int, in_parallel: bool) -> tuple[str, str]:
    """Validate and queue one press of Generate; returns (toast level, message).

    Everything is checked here, on the server: a crafted websocket event with count 9 or a
    2,000-character prompt is refused like any other invalid job, and nothing is published.
    """
    try:
        jobs = build_jobs(prompt, count, in_parallel)
        await get_sink().publish(jobs)
    except EmptyPrompt as error:
        return "info", str(error)
    except StopWordPrompt as error:
        return "warning", str(error)
    except InvalidJob as error:
        return "error", f"Not sent, the job is invalid: {error}"
    except QueueUnavailable as error:
        return "error", f"The queue is unavailable, nothing was sent. {error}"
    images = "1 image" if count == 1 else f"{count} images"
    return "success", f"The task was added to the job queue ({images})."


class PromptState(rx.State):
    """The prompt bar."""

    prompt: str = ""
    count: int = 1
    in_parallel: bool = True
    sending: bool = False

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
    def use_prompt(self, prompt: str) -> None:
        """ "Use this prompt" of the full view (which, as it closes, focuses the prompt box)."""
        self.prompt = prompt

    @rx.event
    async def generate(self):
        """Generate (or Enter): publish, then toast; the box is cleared only after a success."""
        self.sending = True
        yield
        level, message = await submit(self.prompt, self.count, self.in_parallel)
        self.sending = False
        if level == "success":
            self.prompt, self.count = "", 1
        yield [getattr(rx.toast, level)(message), rx.set_focus(PROMPT_INPUT_ID)]


class GalleryState(rx.State):
    """This tab's copy of the gallery, pushed by the process's one watcher."""

    images: list[Card] = []
    selected: Card = Card()
    viewing: bool = False
    _follower: str = ""

    @rx.event
    def view(self, card: Card) -> None:
        self.selected, self.viewing = card, True

    @rx.event
    def set_viewing(self, value: bool) -> None:
        self.viewing = value

    @rx.event(background=True)
    async def follow(self):
        """Push every gallery change to this tab, until the tab goes away.

        Started by the page's on_load. Reflex cancels a page-load chain when its client
        disconnects; as a second guard the loop also ends when a newer loop took over this tab
        (a reload) or, checked every CONNECTION_CHECK_S while idle, its websocket is gone.
        """
        follower = uuid.uuid4().hex
        async with self:
            self._follower = follower
            token = self.router.session.client_token
        gallery = get_gallery()
        seen = -1
        while True:
            if gallery.version != seen:
                seen = gallery.version
                cards = [card_of(entry) for entry in gallery.snapshot]
                async with self:
                    if self._follower != follower:
                        return
                    self.images = cards
            try:
                async with asyncio.timeout(CONNECTION_CHECK_S):
                    await gallery.wait_for_change(seen)
            except TimeoutError:
                if not _connected(token):
                    return


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


def _connected(token: str) -> bool:
    namespace = RegistrationContext.get().app.event_namespace
    return namespace is not None and token in namespace.token_to_sid
