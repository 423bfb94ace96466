"""Your jobs: Generate, and a live card per job this browser session submitted.

The cards follow the process's EventHub (fed by the EventSubscriber, or by the embedded queue).
The jobs a tab submitted are kept in the browser's sessionStorage, so a reload in the same tab
rebuilds the cards from the process's JobRegistry; a job the registry no longer knows (the web
app restarted) shows as queued, and its images still reach the gallery.
"""

import asyncio
import dataclasses
import json
from functools import lru_cache

import reflex as rx
from reflex_base.registry import RegistrationContext

from sd_webui.broker import QueueUnavailable
from sd_webui.cancellation import publish_cancel
from sd_webui.events import FINAL_STATES, JobEvent, get_hub
from sd_webui.jobs import Job
from sd_webui.publishing import get_embedded_queue
from sd_webui.queue_stats import get_queue_stats
from sd_webui.shared_registry import recall
from sd_webui.state import IMAGE_ROUTE, PROMPT_INPUT_ID, PromptState, Submitted, submit

# How often a tab's loop, idle with nothing to apply, checks that its tab is still open.
CONNECTION_CHECK_S = 30.0
MAX_CARDS = 20  # the newest cards a tab keeps (and remembers across a reload)
UNFINISHED = ("queued", "running")
APP_TITLE = "Stable Diffusion"


class StartCounter:
    """How many jobs any worker has started since this process began (a hub listener).

    With RabbitMQ the app cannot see where a job stands in the queue, so a card counts down
    from the queue length when it was published (read just before, plus the jobs of the same
    press before it) by every first start seen since: an estimate, exact when one app and its
    workers are alone on the queue.
    """

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, event: JobEvent) -> None:
        if event.state == "started" and (event.attempt or 1) == 1:
            self.count += 1


@lru_cache
def start_counter() -> StartCounter:
    """The process's counter, listening to the hub from its first use (the app's lifespan)."""
    counter = StartCounter()
    get_hub().add_listener(counter)
    return counter


@dataclasses.dataclass(frozen=True)
class JobCard:
    """One job as its card shows it."""

    id: str = ""
    prompt: str = ""
    count: int = 1
    state: str = "queued"  # queued | running | done | failed | cancelled
    ahead: int = -1  # queued: jobs that start before it, as far as the app knows; -1 unknown
    waiting_then: int = -1  # RabbitMQ: jobs ahead when published (-1 unknown) ...
    starts_then: int = 0  # ... and StartCounter.count then
    cancelling: bool = False  # a cancel was sent; the `cancelled` event comes from a worker
    worker: str = ""
    step: int = 0
    steps: int = 0
    image: int = 0
    percent: int = 0
    error: str = ""
    images: list[str] = dataclasses.field(default_factory=list)  # done: the PNGs' paths
    filtered: list[str] = dataclasses.field(default_factory=list)  # done: those blacked out


def applied(card: JobCard, event: JobEvent) -> JobCard:
    """The card after `event`; a final card never moves again and `queued` never goes back."""
    if card.state in FINAL_STATES or (event.state == "queued" and card.state != "queued"):
        return card
    match event.state:
        case "started":
            return dataclasses.replace(card, state="running", worker=event.worker or "", ahead=-1)
        case "progress":
            step, steps, image = event.step or 0, event.steps or 1, event.image or 0
            done_steps, total = step, steps
            if image and card.count > 1:  # images one after another: the job's whole way
                done_steps, total = (image - 1) * steps + step, card.count * steps
            percent = round(100 * done_steps / total)
            # The worker too: a card restored from the registry missed the `started` event
            # (the registry carries its worker on).
            worker = event.worker or card.worker
            return dataclasses.replace(
                card,
                state="running",
                worker=worker,
                step=step,
                steps=steps,
                image=image,
                percent=percent,
            )
        case "done":
            pngs = [f"{IMAGE_ROUTE}/{name}" for name in event.pngs]
            filtered = [pngs[number - 1] for number in event.filtered or [] if number <= len(pngs)]
            return dataclasses.replace(
                card, state="done", percent=100, images=pngs, filtered=filtered
            )
        case "failed":
            return dataclasses.replace(card, state="failed", error=event.error or "unknown error")
        case "cancelled":
            return dataclasses.replace(card, state="cancelled", cancelling=False)
    return card


def with_ahead(card: JobCard) -> JobCard:
    """A queued card's `ahead`, from the embedded queue itself or the RabbitMQ estimate."""
    if card.state != "queued":
        return card
    queue = get_embedded_queue()
    if queue is not None:
        ahead = queue.ahead_of(card.id)
        return card if ahead is None else dataclasses.replace(card, ahead=ahead)
    if card.waiting_then < 0:
        return card
    started = start_counter().count - card.starts_then
    return dataclasses.replace(card, ahead=max(0, card.waiting_then - started))


async def waiting_now() -> int | None:
    """Jobs in the RabbitMQ queue at this moment (one passive declare); None in embedded mode,
    where the queue itself knows each job's place, or when the broker cannot say."""
    stats = get_queue_stats()
    return None if stats is None else (await stats.refresh()).waiting


def new_cards(jobs: tuple[Job, ...], waiting: int | None) -> list[JobCard]:
    """Cards for the jobs of one press, newest first, already up to date with the registry;
    `waiting`: the jobs in the queue just before they were published."""
    starts = start_counter().count
    registry = get_hub().registry
    cards = []
    for index, job in enumerate(jobs):
        card = JobCard(
            id=job.id,
            prompt=job.prompt,
            count=job.count,
            waiting_then=-1 if waiting is None else waiting + index,
            starts_then=starts,
        )
        cards.append(restored(card, registry.latest(job.id)))
    return cards[::-1]


def restored(card: JobCard, latest: JobEvent | None) -> JobCard:
    return with_ahead(card if latest is None else applied(card, latest))


def connected(token: str) -> bool:
    """Whether this tab's websocket is open on this process (its loop ends when not)."""
    namespace = RegistrationContext.get().app.event_namespace
    if namespace is None:
        return False
    tokens = namespace._token_manager
    socket = tokens.token_to_socket.get(token)
    return socket is not None and socket.instance_id == tokens.instance_id


@dataclasses.dataclass
class TabLoop:
    """A tab's current `follow` loop and that tab's unfinished jobs, readable without the tab's
    state lock: the loop takes the lock only for an event about one of them, or for a start
    while it has any (a start moves the "jobs ahead" of queued cards). Every other tab sleeps
    through an event, so its cost grows with the tabs concerned, not the tabs open."""

    unfinished: frozenset[str] = frozenset()


_loops: dict[str, TabLoop] = {}  # by client token: the newest loop of each tab of this process


def concerns(batch: list[JobEvent], unfinished: frozenset[str]) -> bool:
    return bool(unfinished) and any(
        event.id in unfinished or event.state == "started" for event in batch
    )


class JobsState(rx.State):
    """This tab's job cards, Generate, Retry and Cancel."""

    jobs: list[JobCard] = []
    # The jobs this tab submitted (their JSON bodies, newest first), for reloads and Retry.
    submitted: str = rx.SessionStorage("[]", name="sd_webui_jobs")

    @rx.var
    def pending(self) -> int:
        """Unfinished jobs of this session (a cancelled one no longer counts)."""
        return sum(card.state in UNFINISHED and not card.cancelling for card in self.jobs)

    @rx.var
    def tab_title(self) -> str:
        running = [card.percent for card in self.jobs if card.state == "running"]
        return f"[{running[-1]}%] {APP_TITLE}" if running else APP_TITLE

    @rx.var
    def finished_ids(self) -> list[str]:
        """Jobs whose images the gallery highlights."""
        return [card.id for card in self.jobs if card.state == "done"]

    def _bodies(self) -> list[dict]:
        try:
            bodies = json.loads(self.submitted)
        except ValueError:
            return []
        return (
            [body for body in bodies if isinstance(body, dict)] if isinstance(bodies, list) else []
        )

    async def _send(self, prompt: str, count: int, in_parallel: bool, **options) -> Submitted:
        """Submit under this session's limit; the new jobs get cards and are remembered."""
        waiting = await waiting_now()
        outcome = await submit(prompt, count, in_parallel, pending=self.pending, **options)
        if outcome.jobs:
            self._show((new_cards(outcome.jobs, waiting) + self.jobs)[:MAX_CARDS])
            bodies = [json.loads(job.body()) for job in reversed(outcome.jobs)]
            self.submitted = json.dumps((bodies + self._bodies())[:MAX_CARDS])
        return outcome

    @rx.event
    async def generate(self):
        """Generate (or Enter): publish, then toast; the box is cleared only after a success."""
        form = await self.get_state(PromptState)
        form.sending = True
        yield
        outcome = await self._send(form.prompt, form.count, form.in_parallel, **form.options())
        form.sending = False
        if outcome.level == "success":
            form.prompt, form.count = "", 1
        yield [getattr(rx.toast, outcome.level)(outcome.message), rx.set_focus(PROMPT_INPUT_ID)]

    @rx.event
    async def retry(self, job_id: str):
        """Retry a failed job: the same settings, published again as a new job."""
        body = next((body for body in self._bodies() if body.get("id") == job_id), None)
        if body is None:
            yield rx.toast.error("This job's settings are no longer known.")
            return
        # Checked again like any press of Generate: sessionStorage is the browser's to change.
        options = {key: value for key, value in body.items() if key not in ("id", "submitted_at")}
        prompt, count = options.pop("prompt", ""), options.pop("count", 1)
        outcome = await self._send(prompt, count, False, **options)
        yield getattr(rx.toast, outcome.level)(outcome.message)

    @rx.event
    async def cancel(self, job_id: str):
        """Cancel: a queued job is skipped by whichever worker receives it, a running one stops
        at its next step; the card says so when that worker's `cancelled` event comes. Only
        this tab's own jobs (a crafted event cannot cancel someone else's)."""
        if not any(card.id == job_id for card in self.jobs):
            return
        try:
            await publish_cancel(job_id)
        except QueueUnavailable as error:
            yield rx.toast.error(f"Not cancelled: {error}")
            return
        self.jobs = [
            dataclasses.replace(card, cancelling=True) if card.id == job_id else card
            for card in self.jobs
        ]

    @rx.event(background=True)
    async def follow(self):
        """Restore this tab's cards, then move them with every hub event until the tab goes.

        Started by the page's on_load. Reflex cancels a page-load chain when its client
        disconnects; as a second guard the loop also ends when a newer loop took over this tab
        (a reload) or, checked every CONNECTION_CHECK_S while idle, its websocket is gone.
        """
        hub = get_hub()
        events = hub.subscribe()
        loop, token = TabLoop(), ""
        try:
            async with self:
                token = self.router.session.client_token
                _loops[token] = loop
                await recall([job_id for job_id, _ in self._remembered()])
                self._show(self._restored())
            while True:
                try:
                    async with asyncio.timeout(CONNECTION_CHECK_S):
                        batch = [await events.get()]
                except TimeoutError:
                    batch = []
                if _loops.get(token) is not loop or not (batch or connected(token)):
                    return
                while not events.empty():
                    batch.append(events.get_nowait())
                if concerns(batch, loop.unfinished):
                    async with self:
                        self._apply(batch)
        finally:
            hub.unsubscribe(events)
            if _loops.get(token) is loop:
                del _loops[token]

    def _remembered(self) -> list[tuple[str, dict]]:
        """(id, body) of every job this tab remembers."""
        return [(body["id"], body) for body in self._bodies() if isinstance(body.get("id"), str)]

    def _restored(self) -> list[JobCard]:
        """The cards of every job this tab remembers, brought up to date from the registry
        (the events a closed or reloading tab missed are there)."""
        shown = {card.id: card for card in self.jobs}
        registry = get_hub().registry
        cards = []
        for job_id, body in self._remembered():
            count = body.get("count")
            card = shown.get(job_id) or JobCard(
                id=job_id,
                prompt=str(body.get("prompt", "")),
                count=count if isinstance(count, int) else 1,
            )
            cards.append(restored(card, registry.latest(job_id)))
        return cards

    def _apply(self, batch: list[JobEvent]) -> None:
        ids = {event.id for event in batch}
        mine = any(card.id in ids for card in self.jobs)
        starts = any(event.state == "started" for event in batch)
        if not (mine or starts):
            return
        cards = []
        for card in self.jobs:
            for event in batch:
                if event.id == card.id:
                    card = applied(card, event)
            cards.append(with_ahead(card))
        self._show(cards)

    def _show(self, cards: list[JobCard]) -> None:
        self.jobs = cards
        if (loop := _loops.get(self.router.session.client_token)) is not None:
            loop.unfinished = frozenset(card.id for card in cards if card.state in UNFINISHED)
