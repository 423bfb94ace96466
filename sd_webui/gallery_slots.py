"""The gallery as a fixed set of slots, so that a change sends only what changed.

Reflex sends a var's whole value whenever it changes: a gallery held as one list of 24 cards
re-sends (and the browser re-renders) all 24 for every new image. Here each image keeps one
slot for as long as it is shown; a new image takes a free slot (or the one the oldest image
left) and the page gets that one card plus `order`, the slot numbers newest first. The page
renders the cards in `order`, keyed by slot, so the browser builds one new card and moves the
others.
"""

from collections.abc import Sequence

from sd_webui.image_files import Entry


class SlotLayout:
    """Which image each of `size` slots shows (None: empty)."""

    def __init__(self, size: int) -> None:
        self.slots: list[Entry | None] = [None] * size

    @property
    def order(self) -> list[int]:
        """The filled slots, newest image first (equal times by name, as the gallery sorts)."""
        filled = [(e.mtime_ns, e.name, slot) for slot, e in enumerate(self.slots) if e is not None]
        return [slot for *_, slot in sorted(filled, reverse=True)]

    def update(self, entries: Sequence[Entry]) -> dict[int, Entry | None]:
        """Show `entries` (at most `size`); returns the slots whose content changed.

        An image still shown keeps its slot; one whose metadata changed counts as changed in
        place; slots of images no longer shown are given to the new ones or emptied.
        """
        wanted = {entry.name: entry for entry in entries[: len(self.slots)]}
        changed: dict[int, Entry | None] = {}
        for slot, entry in enumerate(self.slots):
            if entry is None:
                continue
            if entry.name not in wanted:
                self.slots[slot] = changed[slot] = None
            elif wanted[entry.name] != entry:
                self.slots[slot] = changed[slot] = wanted[entry.name]
        shown = {entry.name for entry in self.slots if entry is not None}
        free = (slot for slot, entry in enumerate(self.slots) if entry is None)
        for name, entry in wanted.items():
            if name not in shown:
                slot = next(free)
                self.slots[slot] = changed[slot] = entry
        return changed
