"""The gallery's slots: an image keeps its slot while shown, and a change touches only the slots
it must (what the live feed sends)."""

import random

from sd_webui.gallery_slots import SlotLayout
from sd_webui.image_files import Entry
from sd_webui.metadata import ImageInfo


def entry(number: int, prompt: str = "a cat") -> Entry:
    return Entry(
        f"{number:032x}-1.png", 1_700_000_000_000_000_000 + number, ImageInfo(prompt=prompt)
    )


def newest(numbers: list[int]) -> list[Entry]:
    return [entry(number) for number in sorted(numbers, reverse=True)]


def shown(layout: SlotLayout) -> list[str]:
    return [layout.slots[slot].name for slot in layout.order]


def test_a_new_image_changes_one_slot() -> None:
    layout = SlotLayout(4)
    assert layout.update(newest([1, 2, 3, 4])).keys() == {0, 1, 2, 3}
    assert shown(layout) == [e.name for e in newest([1, 2, 3, 4])]
    changed = layout.update(newest([2, 3, 4, 5]))
    assert list(changed.values()) == [entry(5)]  # into the slot the oldest (1) left
    assert shown(layout) == [e.name for e in newest([2, 3, 4, 5])]


def test_a_deleted_image_frees_its_slot_and_the_next_oldest_moves_in() -> None:
    layout = SlotLayout(3)
    layout.update(newest([1, 2, 3]))
    slot_of_2 = next(slot for slot, e in enumerate(layout.slots) if e == entry(2))
    changed = layout.update(newest([1, 3]))
    assert changed == {slot_of_2: None}
    assert shown(layout) == [entry(3).name, entry(1).name]
    assert layout.update(newest([0, 1, 3])) == {slot_of_2: entry(0)}


def test_changed_metadata_is_sent_in_place() -> None:
    layout = SlotLayout(2)
    layout.update(newest([1, 2]))
    slot = layout.order[0]
    renamed = [entry(2, "a dog"), entry(1)]
    assert layout.update(renamed) == {slot: renamed[0]}


def test_any_sequence_of_changes_ends_showing_exactly_the_gallery() -> None:
    layout, generator = SlotLayout(8), random.Random(11)
    present: set[int] = set()
    for _ in range(300):
        if present and generator.random() < 0.4:
            present -= set(generator.sample(sorted(present), k=min(len(present), 3)))
        else:
            present |= {generator.randrange(1000) for _ in range(generator.randint(1, 5))}
        wanted = newest(list(present))[:8]
        before = list(layout.slots)
        changed = layout.update(wanted)
        assert shown(layout) == [e.name for e in wanted]
        assert {s for s in range(8) if layout.slots[s] != before[s]} == set(changed)
