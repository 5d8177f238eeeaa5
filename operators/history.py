"""A key's row versions for an as-of lookup: which row was valid when.

Pure and small, so the join (`operators.as_of`) and the segments of its
waiting events decide with the one rule which version an event joins.

A version is valid from its validity time until the next version's; a
tombstone (row None) ends the key's validity from its time until a later
version. History is bounded per key, relative to the key's own newest
validity time, so it follows the reference data's time rather than the clock:
bounded by `history_seconds` and by `history_versions`. Once older versions
were dropped, `start` says from when the kept history holds: an event before
it cannot be joined by any version that will still arrive.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Any

Row = tuple[Any, ...]
"""Projected values and, last, the version: what the join hands the sink."""
Frozen = tuple[tuple[float, ...], tuple["Row | None", ...]]
"""A key's versions as sent to the segments: validity times and rows, oldest first."""
NOT_KEPT = -math.inf
"""`Versions.start` of a key that dropped nothing: every time is within its history."""


class Versions:
    """One key's kept versions, oldest first; slotted, since there is one per reference key."""

    __slots__ = ("rows", "start", "times")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.rows: list[Row | None] = []
        self.start = NOT_KEPT

    def at(self, when: float) -> Row | None:
        """The row valid at `when`; None when none is (before the first, or deleted then)."""
        return row_at(self.times, self.rows, when)

    def frozen(self) -> Frozen:
        """A copy to send to the segments, which the join's later changes leave alone."""
        return tuple(self.times), tuple(self.rows)

    def before_history(self, when: float) -> bool:
        """Whether `when` lies before the versions kept, so no version can join it any more."""
        return when < self.start

    def put(self, valid_from: float, row: Row | None) -> bool:
        """Add a version (row None: a tombstone); False when it changes nothing.

        Two versions with one validity time: the higher version wins, as the
        latest mode orders versions; a tombstone replaces whatever was there.
        """
        times, rows = self.times, self.rows
        index = bisect_left(times, valid_from)
        if index < len(times) and times[index] == valid_from:
            current = rows[index]
            if row is not None and current is not None and _not_newer(row[-1], current[-1]):
                return False
            if row is None and current is None:
                return False
            rows[index] = row
            return True
        times.insert(index, valid_from)
        rows.insert(index, row)
        return True

    def prune(self, history_seconds: float, history_versions: int) -> int:
        """Drop the versions no time within the bounds needs; how many were dropped.

        A version is needed while its successor starts after the newest
        validity time less `history_seconds`; at most `history_versions` are kept.
        """
        times = self.times
        horizon = times[-1] - history_seconds
        drop = 0
        while drop + 1 < len(times) and times[drop + 1] <= horizon:
            drop += 1
        drop = max(drop, len(times) - history_versions)
        if drop:
            del times[:drop]
            del self.rows[:drop]
            self.start = times[0]
        return drop

    def __len__(self) -> int:
        return len(self.times)


def _not_newer(version: Any, current: Any) -> bool:
    return version is not None and current is not None and version <= current


def row_at(times: Sequence[float], rows: Sequence[Row | None], when: float | None) -> Row | None:
    """`Versions.at` over a frozen copy, for an event's own time (None: the newest row)."""
    if when is None or when >= times[-1]:
        return rows[-1]
    index = bisect_right(times, when) - 1
    return rows[index] if index >= 0 else None
