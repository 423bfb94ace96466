"""What every tab shows alike (the gallery, the header's queue figures, whether Redis answers),
computed once per change and pushed to all of this process's tabs at once.

A tab's own Reflex state never holds these values. The feed writes the state delta itself, in
the form Reflex's frontend applies, encodes it once and queues that frame on the socket of
every tab in one Socket.IO room: a new image costs one delta and one encoding for the whole
process, then one send per tab, instead of a state load, a rebuild of 24 cards and an encoding
per tab. The gallery goes out as slots (sd_webui/gallery_slots.py), so a new image sends one
card, not 24.

A tab joins on page load, and again after every reconnect (which runs on_load again, on
whichever replica it reached): it enters the room first and is then sent the whole current
picture, so a change between the two cannot be missed.
"""

import asyncio
import logging
from typing import Any

import reflex as rx
from engineio import packet as engineio_packet
from reflex.app import EventNamespace
from reflex.state import StateUpdate
from reflex_base.constants import SocketEvent
from reflex_base.constants.state import FIELD_MARKER
from reflex_base.registry import RegistrationContext
from socketio import packet as socketio_packet

from sd_webui.gallery import Gallery, get_gallery
from sd_webui.gallery_slots import SlotLayout
from sd_webui.publishing import queue_snapshot
from sd_webui.queue_stats import POLL_INTERVAL_S, QueueSnapshot
from sd_webui.settings import get_settings
from sd_webui.shared_registry import get_shared_registry
from sd_webui.state import Card, card_of

log = logging.getLogger(__name__)

ROOM = "live"
# The page is compiled with one card slot per gallery place (GALLERY_SIZE when it was built).
SLOTS = get_settings().gallery_size

Delta = dict[str, dict[str, Any]]


def slot_var(slot: int) -> str:
    return f"slot_{slot}"


class GalleryState(rx.State):
    """The gallery as the feed last sent it: slot_0 .. slot_<SLOTS-1> and their order."""

    order: list[int] = []  # the slots to show, newest image first
    scanned: bool = False  # the folder's first scan is done (before: "Loading", not "No images")

    @rx.event
    async def join(self) -> None:
        """on_load: this tab gets every push of the feed from now on, starting with all of it."""
        await get_live_feed().join(self.router.session.session_id)


for _slot in range(SLOTS):
    GalleryState.add_var(slot_var(_slot), Card, Card())


class QueueState(rx.State):
    """The header's figures: jobs waiting and workers consuming (-1: not known)."""

    waiting: int = -1
    workers: int = -1


class StoreState(rx.State):
    """With REDIS_URL: whether Redis, where every tab's state lives, answered the last ping.
    Pushed by the feed, which needs no Redis, so the page can say so while events fail."""

    redis_down: bool = False


def figures_of(snapshot: QueueSnapshot | None) -> tuple[int, int]:
    snapshot = snapshot or QueueSnapshot()
    return (
        -1 if snapshot.waiting is None else snapshot.waiting,
        -1 if snapshot.workers is None else snapshot.workers,
    )


def fields(state: type[rx.State], values: dict[str, Any]) -> Delta:
    """A delta for `state` as Reflex's frontend reads it."""
    return {state.get_full_name(): {name + FIELD_MARKER: value for name, value in values.items()}}


class LiveFeed:
    """The process's one copy of the shared picture, and the tasks that push its changes."""

    def __init__(self, gallery: Gallery, slots: int = SLOTS) -> None:
        self.gallery = gallery
        self.layout = SlotLayout(slots)
        self.cards = [Card()] * slots  # what each slot shows, as sent
        self.figures = (-1, -1)
        self.redis_down = False

    def snapshot(self) -> Delta:
        """Everything a tab that just joined must show."""
        cards = {slot_var(slot): card for slot, card in enumerate(self.cards)}
        return {
            **fields(GalleryState, {**cards, **self._gallery_fields()}),
            **self._figures_delta(),
            **fields(StoreState, {"redis_down": self.redis_down}),
        }

    def _gallery_fields(self) -> dict[str, Any]:
        return {"order": self.layout.order, "scanned": self.gallery.scanned}

    def _figures_delta(self) -> Delta:
        waiting, workers = self.figures
        return fields(QueueState, {"waiting": waiting, "workers": workers})

    async def join(self, sid: str) -> None:
        namespace = RegistrationContext.get().app.event_namespace
        if namespace is None:
            return
        await namespace.enter_room(sid, ROOM)
        # From here every push reaches this tab; the picture it gets first is read and queued
        # now, with nothing awaited, so the pushes after it follow it on the socket.
        eio_sid = namespace.server.manager.eio_sid_from_sid(sid, namespace.namespace)
        self._send(namespace, self.snapshot(), [eio_sid])

    def _push(self, delta: Delta) -> None:
        namespace = RegistrationContext.get().app.event_namespace
        if namespace is not None:
            members = namespace.server.manager.get_participants(namespace.namespace, ROOM)
            self._send(namespace, delta, [eio_sid for _, eio_sid in members])

    @staticmethod
    def _send(namespace: EventNamespace, delta: Delta, eio_sids: list[str]) -> None:
        """Encode the frame once and queue it on each socket at once, in the order frames are
        made (python-socketio's emit would make a task per socket, and so no order)."""
        server = namespace.server
        data = [str(SocketEvent.EVENT), StateUpdate(delta=delta)]
        encoded = server.packet_class(socketio_packet.EVENT, data, namespace.namespace).encode()
        frame = engineio_packet.Packet(engineio_packet.MESSAGE, encoded)
        for eio_sid in eio_sids:
            socket = server.eio.sockets.get(eio_sid)
            if socket is not None and not socket.closed:
                socket.queue.put_nowait(frame)

    async def follow_gallery(self) -> None:
        """Push each change of the gallery: the slots it changed and the new order."""
        seen = -1
        while True:
            await self.gallery.wait_for_change(seen)
            seen = self.gallery.version
            cards = {}
            for slot, entry in self.layout.update(self.gallery.snapshot).items():
                self.cards[slot] = Card() if entry is None else card_of(entry)
                cards[slot_var(slot)] = self.cards[slot]
            self._push(fields(GalleryState, {**cards, **self._gallery_fields()}))

    async def follow_queue(self) -> None:
        """Push the queue figures when they change (read every POLL_INTERVAL_S)."""
        while True:
            figures = figures_of(queue_snapshot())
            if figures != self.figures:
                self.figures = figures
                self._push(self._figures_delta())
            await asyncio.sleep(POLL_INTERVAL_S)

    async def follow_redis(self) -> None:
        """With REDIS_URL, push whether Redis answers (pinged every POLL_INTERVAL_S)."""
        if (shared := get_shared_registry()) is None:
            return
        while True:
            down = not await shared.reachable()
            if down != self.redis_down:
                self.redis_down = down
                log.warning("Redis is %s", "unreachable" if down else "reachable again")
                self._push(fields(StoreState, {"redis_down": down}))
            await asyncio.sleep(POLL_INTERVAL_S)

    async def run(self) -> None:
        """Every push until cancelled (a lifespan task); a failure is logged and retried."""
        while True:
            try:
                await asyncio.gather(
                    self.follow_gallery(), self.follow_queue(), self.follow_redis()
                )
            except Exception:
                log.exception("live feed failed; restarting in 1 s")
                await asyncio.sleep(1)


_feed: LiveFeed | None = None


def get_live_feed() -> LiveFeed:
    """The process's one feed, over its one gallery."""
    global _feed
    if _feed is None:
        _feed = LiveFeed(get_gallery())
    return _feed
