"""Waiting events parked in segments that are written once, so snapshots follow what changed.

Bytewax snapshots a state key whole in every epoch that touched it. Kept in
the join's shard keys, waiting events were rewritten every epoch during a
miss storm, since every shard changes every epoch. Here the join
(`ParkingJoin`, keyed by shard) sends each event that misses to a segment
(`Segment`, keyed by shard and the second it missed in) and keeps only a
small book: per lookup id, how many of its events wait in which segment. A
segment is touched again only when a row releases some of its events, when a
bound evicts from it, or when its events time out, and it is dropped
(`DISCARD`) once empty.

The rules stay those of `ShardEnricher`, which both classes extend:

- Timeouts run in the segment, per event. The join drops a segment from its
  book once every event in it has passed its deadline, so its counts may
  include events that already timed out, for at most `SEGMENT_SECONDS`:
  the bounds then act a little early, never late.
- A lookup id over `max_pending_per_key` evicts its oldest event, from the
  oldest segment holding it. Over `max_pending_per_shard` or the memory
  budget, the shard's oldest segment leaves whole: at most a second's
  arrivals, the oldest ones, each out as `overflow` under the miss policy.
- Events held while the reference source catches up after a start stay in
  the join: they are few and short-lived.
- A late event leaves from its segment, a hit from the join, so copies of one
  event id may reach the sink in either order: the sink keeps the copy that
  arrived last (`Event.seq`, `operators.arrival`).
- On the event clock (`operators.event_clock`) segments are seconds of event
  time, and the join, which alone hears the watermark, tells a segment when
  its events timed out (`Expire`). A row releases a waiting event only if
  the row's record time is within the event's deadline: otherwise the event
  had timed out by then in event time, and leaves as `timeout`, however fast
  the watermark came, so the outcome is a function of the input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from operators import waiting as compact
from operators.enrichment import (
    HELD,
    EnrichConfig,
    Item,
    Output,
    Pending,
    ShardEnricher,
    decoded,
    encoded,
    restore,
)
from operators.event_clock import Watermark, restored
from operators.history import row_at
from operators.lookup_steps import segment_key
from operators.records import Event, MissReason, PartitionTime

SEGMENT_SECONDS = 1.0
"""One segment per shard per second of misses: about one epoch, so a segment is
written in the epoch it fills and the next, then only when its events leave."""


class Park(NamedTuple):
    """An event that missed, encoded (`operators.waiting`)."""

    blob: bytes


class Release(NamedTuple):
    """The row of `lookup_id` arrived: its events in the segment leave late-enriched.

    `at` is the row's record time, for the event clock's rule; `history` the key's
    versions for an as-of lookup (`operators.as_of`), where only the events some
    version is valid for leave.
    """

    lookup_id: str
    row: tuple[Any, ...] | None
    at: float | None = None
    history: tuple[tuple[float, ...], tuple[Any, ...]] | None = None


class Expire(NamedTuple):
    """Event clock: the watermark passed every deadline of the segment; its events time out."""

    until: float


class Evict(NamedTuple):
    """The oldest event of `lookup_id` leaves as overflow; None: every event of the segment."""

    lookup_id: str | None


Message = Park | Release | Evict | Expire


class ToSegment(NamedTuple):
    """A message from the join to segment `segment` of its own shard."""

    segment: int
    message: Message


class Parcels(NamedTuple):
    """What a join sends to its segments in one call, apart from its outputs."""

    messages: list[ToSegment]


JoinState = tuple[list[bytes], dict[str, dict[int, int]], dict[int, list[int]], int, dict[str, Any]]
"""Held events, the book (lookup id to segment to count), segment counts and bytes, the
shard count the events were routed with (`EnrichConfig.shards`), and what the event
clock and as-of lookups add (`watermark`, `times`), plain values only; a snapshot of
an earlier version has three or four parts."""


class ParkingJoin(ShardEnricher):
    """The join of one shard; its misses go to segments, which `ToSegment` outputs address."""

    def __init__(
        self, config: EnrichConfig, resume: JoinState | Sequence[bytes | Pending] | None = None
    ) -> None:
        earlier: list[bytes] = []
        if isinstance(resume, tuple):
            held, book, segments = resume[:3]
        else:
            # A snapshot of a version that kept waiting events in the join: they are
            # parked by the first call, held ones stay held.
            held, book, segments = [], {}, {}
            for blob in encoded(resume or ()):
                (held if compact.deadline(blob) == HELD else earlier).append(blob)
        extra: dict[str, Any] = resume[4] if isinstance(resume, tuple) and len(resume) > 4 else {}
        super().__init__(config, held)
        self.watermark: Watermark | None = None
        if config.clock == "event":
            self.watermark = Watermark(
                config.lateness_seconds, config.idle_seconds, restored(extra.get("watermark"))
            )
        self._extra = extra
        self._now = -math.inf
        self.book: dict[str, dict[int, int]] = book
        self.segments: dict[int, list[int]] = segments
        """Segment to [events, bytes] still counted, oldest first."""
        self._unparked = sorted(earlier, key=compact.deadline)
        self.parcels: list[ToSegment] = []
        """Messages to the segments since `take_parcels`: kept apart from the outputs, so
        the hit path never sorts one from the other."""
        for count, size in segments.values():
            self.pending_count += count
            self.pending_bytes += size
            self.tally.pending_delta += count

    def take_parcels(self) -> list[ToSegment]:
        parcels, self.parcels = self.parcels, []
        return parcels

    def process(self, items: Iterable[Item], now: float) -> list[Output]:
        self._now = now
        if self._unparked:
            out = self._park_resumed()
            out += super().process(items, now)
        else:
            out = super().process(items, now)
        if self.watermark is not None and self.ready:
            self._on_time(self.watermark.current(now), now, out)
        return out

    def _marker(self, item: Item, now: float, out: list[Output]) -> None:
        if self.watermark is not None and type(item) is PartitionTime:
            self.watermark.observe(item, now)

    def _starts(self, event: Event, now: float) -> float:
        """On the event clock, a timeout starts at the event's time (or the newest seen)."""
        if self.watermark is None:
            return now
        if event.event_time is not None:
            return event.event_time
        newest = self.watermark.newest()
        return now if newest is None else newest

    def _record_clock(self, now: float) -> float:
        return self._starts(_TIMELESS, now)

    def _on_time(self, clock: float, now: float, out: list[Output]) -> None:
        """Time on the lookup's clock reached `clock`: segments past it time out, and
        rows past their TTL are dropped."""
        if self.watermark is not None and clock > -math.inf:
            self.tally.watermark = clock
        while self.segments:
            oldest = self._oldest_segment()
            if self._last_deadline(oldest) > clock:
                break
            if self.watermark is not None:
                self.parcels.append(ToSegment(oldest, Expire(clock)))
            self._drop_segment(oldest)
        if self.config.row_ttl_seconds is not None:
            self.drop_unrefreshed(clock)

    def _oldest_segment(self) -> int:
        """Processing-clock segments open in time order; event-time ones in any."""
        return min(self.segments) if self.watermark is not None else next(iter(self.segments))

    def _park_resumed(self) -> list[Output]:
        """Park the waiting events of an earlier version's snapshot, each in the segment
        of the second it started waiting, so it keeps its deadline and its place."""
        out: list[Output] = []
        timeout = self.config.timeout_seconds
        for blob in self._unparked:
            started = compact.deadline(blob) - timeout
            self._park(blob, compact.lookup_id(blob), int(started // SEGMENT_SECONDS), out)
        self._unparked = []
        return out

    def _store(self, blob: bytes, lookup_id: str, now: float, out: list[Output]) -> None:
        started = compact.deadline(blob) - self.config.timeout_seconds
        self._park(blob, lookup_id, int(started // SEGMENT_SECONDS), out)
        self._bound_shard(now, out)

    def _park(self, blob: bytes, lookup_id: str, segment: int, out: list[Output]) -> None:
        """Send `blob` to `segment` and count it there, within the key's bound."""
        size = compact.size(blob)
        self.parcels.append(ToSegment(segment, Park(blob)))
        counts = self.book.get(lookup_id)
        if counts is None:
            counts = self.book[lookup_id] = {}
        counts[segment] = counts.get(segment, 0) + 1
        totals = self.segments.get(segment)
        if totals is None:
            self.segments[segment] = [1, size]
        else:
            totals[0] += 1
            totals[1] += size
        self.pending_count += 1
        self.pending_bytes += size
        self.tally.pending_delta += 1
        if sum(counts.values()) > self.config.max_pending_per_key:
            oldest = next(iter(counts))
            self.parcels.append(ToSegment(oldest, Evict(lookup_id)))
            self._forget(lookup_id, oldest, 1)

    def _evict_oldest(self, now: float, out: list[Output]) -> None:
        if not self.segments:
            super()._evict_oldest(now, out)
            return
        oldest = self._oldest_segment()
        self.parcels.append(ToSegment(oldest, Evict(None)))
        self._drop_segment(oldest)

    def _has_waiting(self, lookup_id: str) -> bool:
        return lookup_id in self.book

    def _waiting_keys(self) -> list[str]:
        return list(self.book)

    def _release(
        self,
        key: str,
        row: tuple[Any, ...],
        now: float,
        out: list[Output],
        at: float | None = None,
    ) -> None:
        at = at if self.watermark is not None else None
        for segment, count in self.book[key].copy().items():
            self.parcels.append(ToSegment(segment, Release(key, row, at)))
            self._forget(key, segment, count)

    def _forget(self, lookup_id: str, segment: int, count: int) -> None:
        """`count` events of `lookup_id` left `segment`; their bytes are the segment's mean."""
        counts = self.book[lookup_id]
        counts[segment] -= count
        if not counts[segment]:
            del counts[segment]
            if not counts:
                del self.book[lookup_id]
        totals = self.segments[segment]
        size = totals[1] * count // totals[0]
        totals[0] -= count
        totals[1] -= size
        if not totals[0]:
            del self.segments[segment]
        self.pending_count -= count
        self.pending_bytes -= size
        self.tally.pending_delta -= count

    def _drop_segment(self, segment: int) -> None:
        count, size = self.segments.pop(segment)
        for lookup_id in [key for key, counts in self.book.items() if segment in counts]:
            counts = self.book[lookup_id]
            del counts[segment]
            if not counts:
                del self.book[lookup_id]
        self.pending_count -= count
        self.pending_bytes -= size
        self.tally.pending_delta -= count

    def _last_deadline(self, segment: int) -> float:
        return (segment + 1) * SEGMENT_SECONDS + self.config.timeout_seconds

    def expire(self, now: float) -> list[Output]:
        """Forget the segments whose every event is past its deadline: they timed out there
        (on the event clock, the join tells them so); drop rows past their TTL."""
        self._now = now
        out = self._park_resumed()
        if self.ready:
            clock = now if self.watermark is None else self.watermark.current(now)
            self._on_time(clock, now, out)
        return out

    def next_deadline(self) -> float | None:
        if self._unparked:
            return 0.0  # at once: events resumed from an earlier version wait to be parked
        if not self.ready:
            return None
        if self.watermark is not None:
            if not self.segments and not self.refreshed:
                return None
            if self._now == -math.inf:
                return 0.0  # resumed and not called since: look at the clock at once
            return self.watermark.next_change(self._now)
        due = self.next_refresh_due()
        if not self.segments:
            return due
        deadline = self._last_deadline(next(iter(self.segments)))
        return deadline if due is None else min(deadline, due)

    def flush(self, now: float) -> list[Output]:
        """End of input: held events are looked up; on the event clock the segments the
        final watermark passed time out; the rest flush their own events."""
        out = self._park_resumed()
        if not self.ready:
            self._become_ready(now, out)
        if self.watermark is not None:
            self._on_time(self.watermark.final(), now, out)
        self.tally.pending_delta -= self.pending_count
        self.book.clear()
        self.segments.clear()
        self.pending_count = self.pending_bytes = 0
        return out

    def snapshot(self) -> JoinState:  # type: ignore[override]
        extra = self._extra_state()
        return list(self.held), self.book, self.segments, self.config.shards, extra

    def _extra_state(self) -> dict[str, Any]:
        # The clock is recorded so a resume on the other one is refused while events wait
        # (`dataflows.recovery_guard`): their deadlines and segments are in its time.
        if self.watermark is None:
            return {"clock": "processing"}
        return {"clock": "event", "watermark": self.watermark.state()}


class Segment(ShardEnricher):
    """The events of one shard that missed in one second, until each leaves.

    The join enforces the bounds, so the segment has none of its own.
    """

    def __init__(self, config: EnrichConfig, resume: list[bytes] | None = None) -> None:
        unbounded = replace(
            config,
            max_pending_per_key=math.inf,  # type: ignore[arg-type]
            max_pending_per_shard=math.inf,  # type: ignore[arg-type]
            max_pending_bytes_per_shard=None,
            wait_for_reference=False,
        )
        super().__init__(unbounded, resume)

    def take(self, messages: Iterable[Message], now: float) -> list[Output]:
        out: list[Output] = []
        for message in messages:
            if type(message) is Park:
                blob = message.blob
                self._store(blob, compact.lookup_id(blob), now, out)
            elif type(message) is Release:
                if message.lookup_id in self.pending:
                    self._release_some(message, now, out)
            elif type(message) is Evict:
                if message.lookup_id is None:
                    self._evict_all(now, out)
                elif message.lookup_id in self.pending:
                    self._evict(self.pending[message.lookup_id][0], now, out)
            elif type(message) is Expire:
                self._expire_until(message.until, now, out)
        return out

    def _release_some(self, message: Release, now: float, out: list[Output]) -> None:
        """Release the key's events the message's row (or history) is valid for; on the
        event clock, those whose deadline passed before the row's record time time out."""
        key, row, at, history = message
        if at is None and history is None:
            self._release(key, row, now, out)  # type: ignore[arg-type]
            return
        staying: list[bytes] = []
        queue = self.pending.pop(key)
        self._live_head = None
        for blob in queue:
            waiting = decoded(blob)
            found = row if history is None else row_at(*history, waiting.event.event_time)
            if found is None:
                staying.append(blob)
                continue
            self.pending_bytes -= compact.size(blob)
            self.pending_count -= 1
            if at is not None and waiting.deadline < at:
                self._miss(waiting, MissReason.TIMEOUT, now, out)
                continue
            self._late(waiting, found, now, out)
        if staying:
            self.pending[key] = staying

    def _expire_until(self, until: float, now: float, out: list[Output]) -> None:
        """The join saw the watermark pass `until`: every event due by then times out."""
        due: list[bytes] = []
        for key, queue in list(self.pending.items()):
            staying = [blob for blob in queue if compact.deadline(blob) > until]
            if len(staying) == len(queue):
                continue
            due.extend(blob for blob in queue if compact.deadline(blob) <= until)
            if staying:
                self.pending[key] = staying
            else:
                del self.pending[key]
        self._live_head = None
        for blob in sorted(due, key=compact.arrived):
            self.pending_count -= 1
            self.pending_bytes -= compact.size(blob)
            self._miss(decoded(blob), MissReason.TIMEOUT, now, out)

    def next_deadline(self) -> float | None:
        """On the event clock only the join knows the time: it sends `Expire`."""
        if self.config.clock == "event":
            return None
        return super().next_deadline()

    def _evict_all(self, now: float, out: list[Output]) -> None:
        for blob in sorted(self.snapshot(), key=compact.arrived):
            self._miss(Pending(*compact.decode(blob)), MissReason.OVERFLOW, now, out)
        self.tally.pending_delta -= self.pending_count
        self.pending.clear()
        self.fifo.clear()
        self.pending_count = self.pending_bytes = 0

    @property
    def empty(self) -> bool:
        return self.pending_count == 0


_TIMELESS = Event("", "", None, {}, "")
"""An event without a time, to ask `_starts` for the clock's present."""


def by_segment(shard: str, parcels: Iterable[ToSegment]) -> list[tuple[str, list[Message]]]:
    """Group a join's messages by the state key of their segment, keeping their order."""
    groups: dict[str, list[Message]] = {}
    for segment, message in parcels:
        groups.setdefault(segment_key(shard, segment), []).append(message)
    return list(groups.items())


def waiting_in(state: object, loads: compact.Loads = compact.pickle.loads) -> list[Pending]:
    """The waiting events of a join's or a segment's snapshot, of any version."""
    if isinstance(state, tuple):
        state = state[0]
    return restore(state or (), loads)  # type: ignore[arg-type]
