"""The names of a lookup's two stateful steps: what the dataflow builds, and what a
recovery store files their snapshots under, so readers of a store tell them apart.

The join `enrich_<lookup>` is keyed by shard; the segments of its misses,
`park_<lookup>`, by `<shard>/<second>` (`operators.parking`).
"""

from __future__ import annotations

from typing import NamedTuple

JOIN_PREFIX = "enrich_"
PARK_PREFIX = "park_"
SEGMENT_SEPARATOR = "/"


def join_step(lookup: str) -> str:
    return f"{JOIN_PREFIX}{lookup}"


def park_step(lookup: str) -> str:
    return f"{PARK_PREFIX}{lookup}"


def segment_key(shard: str, segment: int) -> str:
    return f"{shard}{SEGMENT_SEPARATOR}{segment}"


class StepOf(NamedTuple):
    """Which lookup a stored step belongs to, and whether it holds the lookup's segments."""

    lookup: str
    parked: bool


def step_of(step_id: str) -> StepOf | None:
    """The lookup of a step id as Bytewax stores it (`<flow>.<step>`); None for other steps."""
    name = step_id.split(".", 1)[-1]
    if name.startswith(PARK_PREFIX):
        return StepOf(name.removeprefix(PARK_PREFIX), True)
    if name.startswith(JOIN_PREFIX):
        return StepOf(name.removeprefix(JOIN_PREFIX), False)
    return None


def shard_of_segment(state_key: str) -> tuple[str, int | None]:
    """The shard and second of a segment's state key; second None if the key is not one."""
    shard, separator, second = state_key.rpartition(SEGMENT_SEPARATOR)
    if separator and second.isdecimal():
        return shard, int(second)
    return state_key, None
