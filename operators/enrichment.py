"""The stateful join of events with reference rows, for one shard of lookup ids.

Plain Python with no I/O and an injected clock, so every rule can be tested
without a dataflow. The Bytewax adapter is in `operators.enrich_step`. The
dataflow runs `operators.parking`'s extension of it, which keeps the shard's
waiting events in write-once segments instead of in `pending`.

State layout, and why:

- `rows` maps lookup id to `(*projected values, version)`: one tuple per row,
  the smallest container that still hands the sink its values without copying.
  Rows are never snapshotted; they are rebuilt on start by re-reading the
  reference source, so snapshot cost follows the pending events, not the size
  of the reference table.
- `pending` maps lookup id to its waiting events in arrival order, and `fifo`
  holds every waiting event of the shard in arrival order. Every event waits
  the same timeout, so arrival order is deadline order and the head of `fifo`
  is always the next deadline; entries that left early (released by their row
  or evicted) are skipped lazily when they reach the head. A waiting event is
  one compact `bytes` object (`operators.waiting`), the same object in both,
  and snapshots hold those objects: a storm of waiting events costs little
  memory, and a snapshot copies them instead of pickling object graphs.
- `held` keeps, in arrival order, the events that arrived while the reference
  source was still being re-read after a start (`wait_for_reference`): a row
  missing then may only be unread yet, so they are looked up once every
  reference partition has caught up, and count as hits or misses only then.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from operators import waiting as compact
from operators.records import (
    CaughtUp,
    DeadLetter,
    Event,
    Joined,
    MissReason,
    PartitionTime,
    RefUpdate,
    Status,
)

_new = tuple.__new__
MissPolicy = Literal["defaults", "dead_letter", "pass_through"]
JoinType = Literal["left", "inner"]
Clock = Literal["processing", "event"]
LookupMode = Literal["latest", "as_of"]
Output = Joined | DeadLetter
Item = Event | RefUpdate | CaughtUp | PartitionTime
HELD = math.inf
"""The deadline of a held event: it has not been looked up, so no timeout runs yet."""


@dataclass(frozen=True)
class EnrichConfig:
    """How misses are handled; shared by every shard."""

    timeout_seconds: float
    miss_policy: MissPolicy = "defaults"
    join_type: JoinType = "left"
    defaults: tuple[Any, ...] = ()
    max_pending_per_key: int = 1_000
    max_pending_per_shard: int = 100_000
    max_pending_bytes_per_shard: int | None = None
    """Memory budget of the shard's waiting events (`compact.size`); None for none."""
    wait_for_reference: bool = False
    """Hold events until every reference partition sent `CaughtUp`."""
    shards: int = 0
    """How many shards the lookup's ids are routed over (0: not told). The join records it
    in its snapshots, so a resume with another count is refused (`dataflows.recovery_guard`):
    ids would then route to other shards than the ones their events wait in."""
    clock: Clock = "processing"
    """What deadlines run on: the system clock, or the watermark (`operators.event_clock`)."""
    lateness_seconds: float = 0.0
    """Event clock: how far the watermark stays behind the partitions' event times."""
    idle_seconds: float = 30.0
    """Event clock: a partition silent this long (system clock) no longer holds the watermark."""
    mode: LookupMode = "latest"
    history_seconds: float = 7 * 86_400.0
    history_versions: int = 16
    row_ttl_seconds: float | None = None
    """Drop a key whose row was not refreshed within this long, on `clock`; None: never."""


class Pending(NamedTuple):
    """An event waiting for its reference row; times are epoch seconds.

    A `deadline` of `HELD` marks an event held until the reference source
    caught up, so a snapshot taken meanwhile resumes it as held, not as a miss.
    """

    event: Event
    arrived: float
    deadline: float


@dataclass
class Tally:
    """What one call did, for metrics; reset by whoever reads it."""

    hits: int = 0
    misses: int = 0
    late: int = 0
    applied: int = 0
    stale: int = 0
    deleted: int = 0
    absent_deletes: int = 0
    inner_excluded: int = 0
    pending_delta: int = 0
    rows_delta: int = 0
    ttl_dropped: int = 0
    watermark: float | None = None
    """The event clock's watermark after the call (None on the processing clock, or -inf)."""
    versions_dropped: int = 0
    missed_out: dict[MissReason, int] = field(default_factory=dict)
    late_waits_ms: list[float] = field(default_factory=list)

    def count_miss_out(self, reason: MissReason) -> None:
        self.missed_out[reason] = self.missed_out.get(reason, 0) + 1


class ShardEnricher:
    """Joins the events of one shard with the reference rows of that shard."""

    def __init__(
        self, config: EnrichConfig, resume: Iterable[bytes | Pending] | None = None
    ) -> None:
        self.config = config
        self.rows: dict[str, tuple[Any, ...]] = {}
        self.pending: dict[str, list[bytes]] = {}
        self.fifo: deque[bytes] = deque()
        self.held: deque[bytes] = deque()
        self.ready = not config.wait_for_reference
        self.pending_count = 0
        self.pending_bytes = 0
        self.tally = Tally()
        self._defaults_row = (*config.defaults, None)
        self._caught_up: set[str] = set()
        self._byte_budget = config.max_pending_bytes_per_shard or math.inf
        self._live_head: bytes | None = None
        self.refreshed: dict[str, float] = {}
        """With a row TTL: each key's last refresh time, oldest first."""
        self.expired: set[str] = set()
        """Keys whose row the TTL dropped: their events leave as `row_expired`."""
        for blob in sorted(encoded(resume or ()), key=compact.arrived):
            if compact.deadline(blob) == HELD:
                self.held.append(blob)
            else:
                self.pending.setdefault(compact.lookup_id(blob), []).append(blob)
                self.fifo.append(blob)
            self.pending_count += 1
            self.pending_bytes += compact.size(blob)
        self.tally.pending_delta = self.pending_count

    def process(self, items: Iterable[Item], now: float) -> list[Output]:
        """Apply events and reference updates in the order they arrived."""
        out: list[Output] = []
        if not self.ready:
            items = iter(items)
            self._until_ready(items, now, out)
            if not self.ready:
                return out
        self._lookup_all(items, now, out)
        return out

    def _lookup_all(self, items: Iterable[Item], now: float, out: list[Output]) -> None:
        """The hit loop, once ready; `operators.as_of` has its own.

        The hot loop of the product: locals are bound once and records are built
        with `tuple.__new__`, skipping the NamedTuple constructor's Python-level
        frame (a quarter of the step's time).
        """
        emit = out.append
        get = self.rows.get
        enriched = Status.ENRICHED
        hits = 0
        for item in items:
            if type(item) is Event:
                row = get(item.lookup_id)
                if row is None:
                    self._wait(item, now, out)
                else:
                    emit(_new(Joined, (item, row, row[-1], enriched, None, 0.0)))
                    hits += 1
            elif type(item) is RefUpdate:
                self._apply(item, now, out)
            else:
                self._marker(item, now, out)
        self.tally.hits += hits

    def _marker(self, item: Item, now: float, out: list[Output]) -> None:
        """A marker once ready: a late `CaughtUp` says nothing new; the event clock's
        `PartitionTime` is `operators.parking`'s."""

    def expire(self, now: float) -> list[Output]:
        """Send every event whose deadline has passed out under the miss policy."""
        out: list[Output] = []
        if not self.ready:
            return out
        fifo = self.fifo
        while fifo and compact.deadline(fifo[0]) <= now:
            blob = fifo.popleft()
            waiting = decoded(blob)
            if self._is_live(blob, waiting.event.lookup_id):
                self._drop_oldest_of(waiting.event.lookup_id)
                self._miss(waiting, MissReason.TIMEOUT, now, out)
        return out

    def flush(self, now: float) -> list[Output]:
        """End of input: nothing else can arrive, so every waiting event goes out."""
        out: list[Output] = []
        if not self.ready:
            self._become_ready(now, out)
        blobs: list[bytes | None] = sorted(self.snapshot(), key=compact.arrived)  # type: ignore[arg-type]
        self.tally.pending_delta -= self.pending_count
        self.pending.clear()
        self.fifo.clear()
        self.pending_count = 0
        self.pending_bytes = 0
        for index, blob in enumerate(blobs):
            # Each encoding is freed once decoded, so memory never holds both forms of all.
            blobs[index] = None
            self._miss(decoded(blob), MissReason.END_OF_INPUT, now, out)  # type: ignore[arg-type]
        return out

    def next_deadline(self) -> float | None:
        if not self.ready:
            return None
        fifo = self.fifo
        while fifo and fifo[0] is not self._live_head and not self._is_live(fifo[0]):
            fifo.popleft()
        if not fifo:
            return None
        # Asked after every batch: remember the head found live, not to decode it again.
        self._live_head = fifo[0]
        return compact.deadline(fifo[0])

    def snapshot(self) -> list[bytes]:
        """Only the waiting events, encoded: rows are re-read from the reference source."""
        return [*(blob for queue in self.pending.values() for blob in queue), *self.held]

    def waiting(self) -> list[Pending]:
        """The waiting events, decoded, in no particular order."""
        return restore(self.snapshot())

    def _until_ready(self, items: Iterator[Item], now: float, out: list[Output]) -> None:
        """Hold events and apply updates until every reference partition caught up."""
        for item in items:
            if type(item) is Event:
                self._hold(item, now, out)
            elif type(item) is RefUpdate:
                self._apply(item, now, out)
            elif type(item) is CaughtUp:
                self._caught_up.add(item.source)
                if len(self._caught_up) >= item.partitions:
                    self._become_ready(now, out)
                    return
            else:
                self._marker(item, now, out)

    def _hold(self, event: Event, now: float, out: list[Output]) -> None:
        blob = compact.encode(event, now, HELD)
        self.held.append(blob)
        self.pending_count += 1
        self.pending_bytes += compact.size(blob)
        self.tally.pending_delta += 1
        self._bound_shard(now, out)

    def _bound_shard(self, now: float, out: list[Output]) -> None:
        """Over the shard's count or memory bound, the oldest leave as overflow."""
        while self.pending_count > self.config.max_pending_per_shard or (
            self.pending_bytes > self._byte_budget and self.pending_count
        ):
            self._evict_oldest(now, out)

    def _become_ready(self, now: float, out: list[Output]) -> None:
        """Look up the held events now that the rows are complete.

        Events resumed as misses whose row was re-read meanwhile are released
        first, being older; held events then hit or start their timeout now.
        """
        self.ready = True
        for key in self._waiting_keys():
            self._release_current(key, now, out)
        held, self.held = self.held, deque()
        self.pending_count -= len(held)
        self.pending_bytes -= sum(map(compact.size, held))
        self.tally.pending_delta -= len(held)
        for blob in held:
            waiting = decoded(blob)
            event = waiting.event
            row = self._row_for(event)
            if row is None:
                self._wait(event, now, out, waiting.arrived)
            else:
                waited_ms = (now - waiting.arrived) * 1000.0
                out.append(Joined(event, row, row[-1], Status.ENRICHED, None, waited_ms))
                self.tally.hits += 1

    def _row_for(self, event: Event) -> tuple[Any, ...] | None:
        """The row an event joins, if any: the key's latest (`operators.as_of` reads history)."""
        return self.rows.get(event.lookup_id)

    def _release_current(self, key: str, now: float, out: list[Output]) -> None:
        """Release the waiting events of `key` if its row is there (after a catch-up)."""
        row = self.rows.get(key)
        if row is not None:
            self._release(key, row, now, out)

    def _has_waiting(self, lookup_id: str) -> bool:
        return lookup_id in self.pending

    def _waiting_keys(self) -> list[str]:
        return list(self.pending)

    def _is_live(self, blob: bytes, lookup_id: str | None = None) -> bool:
        """Whether an event at the head of `fifo` is still waiting.

        Only valid for the oldest entry, which is always the oldest of its key.
        """
        queue = self.pending.get(compact.lookup_id(blob) if lookup_id is None else lookup_id)
        return queue is not None and queue[0] is blob

    def _drop_oldest_of(self, lookup_id: str) -> None:
        queue = self.pending[lookup_id]
        self.pending_bytes -= compact.size(queue.pop(0))
        self._live_head = None
        if not queue:
            del self.pending[lookup_id]
        self.pending_count -= 1
        self.tally.pending_delta -= 1

    def _wait(
        self, event: Event, now: float, out: list[Output], arrived: float | None = None
    ) -> None:
        self.tally.misses += 1
        since = now if arrived is None else arrived
        reason = self._no_wait(event)
        if reason is not None:
            self._miss(Pending(event, since, now), reason, now, out)
            return
        blob = compact.encode(event, since, self._starts(event, now) + self.config.timeout_seconds)
        self._store(blob, event.lookup_id, now, out)

    def _no_wait(self, event: Event) -> MissReason | None:
        """Why a missing event leaves at once, or None: it waits."""
        if not event.lookup_id:
            # An earlier lookup left this one's key empty: no row can ever match.
            return MissReason.MISSING_KEY
        if self.expired and event.lookup_id in self.expired:
            return MissReason.ROW_EXPIRED
        return None

    def _starts(self, event: Event, now: float) -> float:
        """When a missing event's timeout starts: now, on the processing clock."""
        return now

    def _store(self, blob: bytes, lookup_id: str, now: float, out: list[Output]) -> None:
        """Keep an encoded waiting event, within the bounds; `operators.parking` overrides it."""
        queue = self.pending.get(lookup_id)
        if queue is None:
            queue = self.pending[lookup_id] = []
        queue.append(blob)
        self.fifo.append(blob)
        self.pending_count += 1
        self.pending_bytes += compact.size(blob)
        self.tally.pending_delta += 1
        if len(queue) > self.config.max_pending_per_key:
            self._evict(queue[0], now, out)
        self._bound_shard(now, out)

    def _evict_oldest(self, now: float, out: list[Output]) -> None:
        """Over the shard's bound: the oldest waiting event goes out, a held one last."""
        fifo = self.fifo
        while fifo and not self._is_live(fifo[0]):
            fifo.popleft()
        if fifo:
            self._evict(fifo.popleft(), now, out)
            return
        oldest = self.held.popleft()
        self.pending_count -= 1
        self.pending_bytes -= compact.size(oldest)
        self.tally.pending_delta -= 1
        self._miss(decoded(oldest), MissReason.OVERFLOW, now, out)

    def _evict(self, oldest: bytes, now: float, out: list[Output]) -> None:
        waiting = decoded(oldest)
        self._drop_oldest_of(waiting.event.lookup_id)
        self._miss(waiting, MissReason.OVERFLOW, now, out)

    def _refresh(self, update: RefUpdate, when: float) -> None:
        """Note a reference record's time for the row TTL (`when` if it has none)."""
        key = update.lookup_id
        self.expired.discard(key)
        self.refreshed.pop(key, None)
        if update.row is not None:
            self.refreshed[key] = when if update.at is None else update.at

    def drop_unrefreshed(self, clock: float) -> None:
        """Drop the rows not refreshed within the TTL before `clock` (on the timeout's clock).

        Refresh order is arrival order, so the sweep stops at the first key still fresh.
        """
        ttl = self.config.row_ttl_seconds
        refreshed = self.refreshed
        while refreshed:
            key = next(iter(refreshed))
            if refreshed[key] + ttl > clock:  # type: ignore[operator]
                return
            del refreshed[key]
            self._forget_row(key)
            self.expired.add(key)
            self.tally.ttl_dropped += 1
            self.tally.rows_delta -= 1

    def _forget_row(self, key: str) -> None:
        del self.rows[key]

    def next_refresh_due(self) -> float | None:
        """When the oldest row outlives the TTL, if a TTL is set and a row is held."""
        ttl = self.config.row_ttl_seconds
        if ttl is None or not self.refreshed:
            return None
        return self.refreshed[next(iter(self.refreshed))] + ttl

    def _apply(self, update: RefUpdate, now: float, out: list[Output]) -> None:
        key = update.lookup_id
        if self.config.row_ttl_seconds is not None:
            self._refresh(update, self._record_clock(now))
        current = self.rows.get(key)
        if update.row is None:
            if current is None:
                self.tally.absent_deletes += 1
            else:
                del self.rows[key]
                self.tally.deleted += 1
                self.tally.rows_delta -= 1
            return
        if (
            current is not None
            and update.version is not None
            and current[-1] is not None
            and update.version <= current[-1]
        ):
            self.tally.stale += 1
            return
        row = (*update.row, update.version)
        self.rows[key] = row
        self.tally.applied += 1
        if current is None:
            self.tally.rows_delta += 1
        if not update.replay and self._has_waiting(key):
            self._release(key, row, now, out, update.at)

    def _record_clock(self, now: float) -> float:
        """The time of a reference record without one: now, on the processing clock."""
        return now

    def _release(
        self,
        key: str,
        row: tuple[Any, ...],
        now: float,
        out: list[Output],
        at: float | None = None,
    ) -> None:
        """The row of events that missed has arrived: they go out late-enriched.

        `at` is the row's record time, which only the event clock reads (`operators.parking`).
        """
        queue = self.pending.pop(key)
        self._live_head = None
        for blob in queue:
            self.pending_bytes -= compact.size(blob)
            self._late(decoded(blob), row, now, out)
        self.pending_count -= len(queue)
        self.tally.pending_delta -= len(queue)

    def _late(self, waiting: Pending, row: tuple[Any, ...], now: float, out: list[Output]) -> None:
        """One waiting event out late-enriched with `row`, its wait counted."""
        waited_ms = (now - waiting.arrived) * 1000.0
        out.append(Joined(waiting.event, row, row[-1], Status.LATE_ENRICHED, None, waited_ms))
        self.tally.late_waits_ms.append(waited_ms)
        self.tally.late += 1

    def _miss(self, waiting: Pending, reason: MissReason, now: float, out: list[Output]) -> None:
        config = self.config
        event = waiting.event
        self.tally.count_miss_out(reason)
        if config.join_type == "inner" or config.miss_policy == "dead_letter":
            if config.join_type == "inner":
                self.tally.inner_excluded += 1
            if config.miss_policy == "dead_letter":
                out.append(
                    DeadLetter(
                        "lookup_miss",
                        f"no reference row for {event.lookup_id!r} ({reason})",
                        json.dumps(event.fields, separators=(",", ":")).encode(),
                        event.lookup_id.encode(),
                        event.origin,
                    )
                )
            return
        row = self._defaults_row if config.miss_policy == "defaults" else None
        waited_ms = (now - waiting.arrived) * 1000.0
        out.append(Joined(event, row, None, Status.LOOKUP_MISS, reason, waited_ms))


def decoded(blob: bytes, loads: compact.Loads = compact.pickle.loads) -> Pending:
    return _new(Pending, compact.decode(blob, loads))


def encoded(state: Iterable[bytes | Pending]) -> list[bytes]:
    """A snapshot as this version keeps it; snapshots of earlier versions hold `Pending`."""
    return [item if isinstance(item, bytes) else compact.encode(*item) for item in state]


def restore(
    state: Iterable[bytes | Pending], loads: compact.Loads = compact.pickle.loads
) -> list[Pending]:
    """The waiting events of a snapshot of any version, decoded; see `compact.decode`."""
    return [decoded(item, loads) if isinstance(item, bytes) else item for item in state]
