"""The events' watermark: how far event time has surely come, for event-time timeouts.

Each shard of an event-clock lookup hears every event partition's largest
event time (`PartitionTime`, sent after the events it covers), and its
watermark is the smallest of them less the allowed lateness: an event waits
until the watermark passes its own time plus the timeout, so where it leaves
depends on the input, not on how fast it was read or how long the job was
down. The watermark never goes back.

The idle rule, on the system clock, so a quiet input cannot hold events for
ever: a partition silent for `idle_seconds` stops holding the watermark back
(a record it sends later below the watermark is late); while every partition
is silent the watermark advances with the system clock from the largest time
seen; and a partition never heard from holds it back only during the first
`idle_seconds` after a start, when the source says how many there are
(`PartitionTime.partitions`), or else the watermark waits that long after a
start before it moves at all.
"""

from __future__ import annotations

import math
from typing import Any

from operators.records import PartitionTime

State = tuple[dict[str, float], float]
"""Each partition's largest event time and the watermark: what a snapshot keeps."""


class Watermark:
    """One shard's view of the event partitions' progress."""

    def __init__(self, lateness: float, idle: float, resume: State | None = None) -> None:
        highs, low = resume if resume is not None else ({}, -math.inf)
        self.highs: dict[str, float] = dict(highs)
        self.low = low
        self.partitions = 0
        self._lateness = lateness
        self._idle = idle
        self._started = math.nan
        self._seen: dict[str, float] = {}

    def _start(self, now: float) -> None:
        """The first call's time is the start; a restart counts as news from every
        partition known, so none is idle at once."""
        self._started = now
        self._seen = dict.fromkeys(self.highs, now)

    def observe(self, mark: PartitionTime, now: float) -> None:
        if self._started != self._started:  # NaN: not started
            self._start(now)
        high = self.highs.get(mark.partition, -math.inf)
        if mark.high > high:
            self.highs[mark.partition] = mark.high
        self._seen[mark.partition] = now
        if mark.partitions:
            self.partitions = mark.partitions

    def current(self, now: float) -> float:
        """The watermark at `now` (system clock), by the idle rule; never lower than before."""
        if self._started != self._started:
            self._start(now)
        idle, highs, seen = self._idle, self.highs, self._seen
        starting = now - self._started < idle
        if starting and (len(highs) < self.partitions or not self.partitions):
            return self.low  # partitions not heard from yet may still hold it back
        active = [high for part, high in highs.items() if now - seen[part] < idle]
        if active:
            mark = min(active) - self._lateness
        elif highs:
            quiet_since = max(seen.values()) + idle
            mark = max(highs.values()) - self._lateness + (now - quiet_since)
        else:
            return self.low
        if mark > self.low:
            self.low = mark
        return self.low

    def final(self) -> float:
        """End of input: every partition has shown its last time."""
        if self.highs:
            self.low = max(self.low, min(self.highs.values()) - self._lateness)
        return self.low

    def newest(self) -> float | None:
        """The largest event time seen, for an event that has none of its own."""
        return max(self.highs.values()) if self.highs else None

    def next_change(self, now: float) -> float:
        """When (system clock) the idle rule may move the watermark without news."""
        if self._started != self._started:
            self._start(now)
        idle, seen = self._idle, self._seen
        times = [at + idle for at in seen.values() if at + idle > now]
        if now - self._started < idle:
            times.append(self._started + idle)
        # Everything quiet: the watermark moves with the clock; look again in a second.
        return min(times) if times else now + 1.0

    def state(self) -> State:
        return dict(self.highs), self.low


def restored(state: Any) -> State | None:
    """A snapshot's watermark state, or None when it holds none (processing clock, older)."""
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
        return state[0], float(state[1])
    return None
