"""Which waiting jobs can share one pipeline call (BATCH_JOBS > 1, worth it on a GPU only).

One diffusers call takes one size, one step count and one guidance scale; prompts and negative
prompts can differ per image. Grouping is a pure function so its rules are tested on their own.
"""

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from sd_webui.jobs import Job

T = TypeVar("T")


def batch_key(job: Job) -> tuple[int, int, int, float]:
    """What jobs must share to run in one pipeline call."""
    return (job.width, job.height, job.steps, float(job.guidance_scale))


def batches(items: Sequence[T], key: Callable[[T], Hashable], limit: int) -> list[list[T]]:
    """`items` in groups of equal `key`, at most `limit` each, in the order they came: groups
    by their first item, items in each group in arrival order."""
    groups: list[list[T]] = []
    open_groups: dict[Hashable, list[T]] = {}
    for item in items:
        group = open_groups.get(key(item))
        if group is None or len(group) == limit:
            group = []
            groups.append(group)
            open_groups[key(item)] = group
        group.append(item)
    return groups
