"""Arrival numbers: the order of the copies of one event id, for the sink to keep the last.

A lookup's misses wait in segments (`operators.parking`), a step apart from
the join, so a copy released late and a later copy that hit reach the sink
by two paths in no fixed order. Each event is numbered as it is decoded, on
the worker that reads its source partition, just before the first lookup:
copies of one event id from one partition arrive at the first lookup in
that order. The sink then keeps the row with the highest number.

Numbers are wall-clock nanoseconds, raised to one past the last number
handed out when the clock has not moved on: increasing within a process,
and, unlike a counter, larger after a restart than any number written
before it (unless the clock was set back by more than the time the restart
took), so a replayed copy still overwrites the row its first run wrote.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class ArrivalNumbers:
    """Hands out increasing numbers in blocks, one block per source batch."""

    def __init__(self, clock_ns: Callable[[], int]) -> None:
        self._clock_ns = clock_ns
        self._next = 0
        # Bytewax workers of one process are threads sharing this object.
        self._lock = threading.Lock()

    def take(self, count: int) -> int:
        """The first of `count` numbers no earlier call handed out, all above the clock's now."""
        with self._lock:
            first = max(self._next, self._clock_ns())
            self._next = first + count
        return first
