"""Whether a recovery store fits the dataflow about to resume from it.

Bytewax restores each step's state by key. A partitioned input or output
whose stored partition key is not among the partitions the step lists now
(another dead-letter path, fewer sink partitions or demo partitions) stops
the resume with a panic ("not in this worker's routing map"); a stateful
step's state under a key the routing no longer uses (another shard count)
would strand the events waiting there, and so would a step that is gone (a
lookup removed), whose state Bytewax drops without a word. This compares
the keys a restart would load with the keys the new dataflow has, before
Bytewax opens the store, so the run can refuse with what changed and what
to do instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from operators.lookup_steps import step_of
from recovery_store.resume import resume_point, resume_snapshots
from recovery_store.store import Store
from recovery_store.unpickle import loads

MAX_KEYS_SHOWN = 8


@dataclass(frozen=True)
class StepLayout:
    """The state keys a step of the new dataflow can take, and the settings that decide them.

    `keys` is None when only a running system can tell (a Kafka topic's
    partitions): such a step is known to exist, its keys are not compared.
    """

    keys: frozenset[str] | None
    settings: str


@dataclass(frozen=True)
class Change:
    step_id: str
    settings: str
    orphans: list[str]
    """Stored keys the new dataflow has no place for."""
    now: list[str] | None
    """The keys the new dataflow has; None when the step is gone from it."""
    waiting: int | None = 0
    """For a step that is gone: the events its state holds, which a resume would drop;
    None when its state cannot be decoded."""

    def __str__(self) -> str:
        if self.now is None:
            held = (
                "state that cannot be decoded, which may be waiting events"
                if self.waiting is None
                else f"{self.waiting} waiting events"
            )
            return (
                f"step {self.step_id!r} is gone from this dataflow (a lookup removed?), and "
                f"its state holds {held} that a resume would drop"
            )
        return (
            f"step {self.step_id!r} ({self.settings}): the store holds state for "
            f"{_keys(self.orphans)}, which this dataflow does not have (it has {_keys(self.now)})"
        )


def _keys(keys: Collection[str]) -> str:
    shown = sorted(keys)
    more = len(shown) - MAX_KEYS_SHOWN
    text = ", ".join(repr(key) for key in shown[:MAX_KEYS_SHOWN])
    return f"{text} and {more} more" if more > 0 else text or "nothing"


def resumed_keys(store: Store) -> dict[str, set[str]]:
    """Per step, the keys whose state a restart would load (discarded keys load nothing)."""
    keys: dict[str, set[str]] = defaultdict(set)
    for snap in resume_snapshots(store, resume_point(store)):
        if snap.data is not None:
            keys[snap.step_id].add(snap.state_key)
    return dict(keys)


def waiting_events(store: Store, step_id: str) -> int | None:
    """How many events the state of `step_id` that a restart would load holds; None if unknown.

    Only a lookup's steps hold waiting events: a segment's state (`park_`) is
    a list of them, a join's (`enrich_`) a tuple of its held events, its book
    and its segments' totals, or, written by an earlier version, a list;
    offsets and sink positions are numbers or None. The join's book is not
    counted: its events are in the segments. Decoded with the
    restricted unpickler, so only call it on a store `trust` accepted.
    """
    total = 0
    for snap in resume_snapshots(store, resume_point(store)):
        if snap.step_id == step_id and snap.data is not None:
            try:
                state = loads(snap.data)
            except Exception:  # Whatever the bytes are, they are not state of ours.
                return None
            if isinstance(state, tuple) and state and isinstance(state[0], list):
                state = state[0]  # a join's: its held events first (`operators.parking`)
            total += len(state) if isinstance(state, list) else 0
    return total


def changes(store: Store, layout: Mapping[str, StepLayout]) -> list[Change]:
    """Steps whose stored keys the new dataflow cannot take; empty when it can resume.

    A step that is gone is listed with `now` None; `waiting_events` tells
    whether dropping its state loses anything.
    """
    found: list[Change] = []
    for step_id, stored in sorted(resumed_keys(store).items()):
        step = layout.get(step_id)
        if step is None:
            found.append(Change(step_id, "", sorted(stored), None))
        elif step.keys is not None and not stored <= step.keys:
            orphans = sorted(stored - step.keys)
            found.append(Change(step_id, step.settings, orphans, sorted(step.keys)))
    return found


@dataclass(frozen=True)
class ShardCountChange:
    """A lookup whose stored join state was routed over other shard counts than the new one's."""

    step_id: str
    stored: frozenset[int]
    now: int

    def __str__(self) -> str:
        before = " and ".join(str(count) for count in sorted(self.stored))
        return (
            f"step {self.step_id!r} (ENRICH_SHARDS): its state was routed over {before} shards, "
            f"this dataflow routes over {self.now}; lookup ids would reach other shards than "
            "the ones their events wait in, and those events would leave as timeouts instead "
            "of enriched"
        )


def shard_count_changes(store: Store, shards: int) -> list[ShardCountChange]:
    """Lookups whose joins, as a restart would load them, recorded another shard count.

    Joins record the count in their snapshots (`operators.parking.JoinState`);
    snapshots of earlier versions did not, and are not compared. Needs the
    joins' snapshot bytes (`read_store(..., data_of=...)`); decoded with the
    restricted unpickler, so only call it on a store `trust` accepted.
    """
    counts: dict[str, set[int]] = defaultdict(set)
    for snap in resume_snapshots(store, resume_point(store)):
        of = step_of(snap.step_id)
        if of is None or of.parked or not snap.data:
            continue
        try:
            state = loads(snap.data)
        except Exception:  # Not state of ours: other checks say so.
            continue
        if isinstance(state, tuple) and len(state) >= 4 and type(state[3]) is int and state[3]:
            counts[snap.step_id].add(state[3])
    return [
        ShardCountChange(step_id, frozenset(stored), shards)
        for step_id, stored in sorted(counts.items())
        if stored != {shards}
    ]


@dataclass(frozen=True)
class ClockChange:
    """A lookup whose stored join waits on events timed on another clock than the new one."""

    step_id: str
    stored: str
    now: str
    waiting: int

    def __str__(self) -> str:
        return (
            f"step {self.step_id!r} (ENRICH_TIMEOUT_CLOCK, or the lookup's timeout_clock): "
            f"{self.waiting} events wait with deadlines on the {self.stored} clock, this "
            f"dataflow runs it on the {self.now} clock; their deadlines and segments are "
            f"in {self.stored} time, so they would time out at once or not until the end"
        )


def clock_changes(store: Store, clocks: Mapping[str, str]) -> list[ClockChange]:
    """Joins, as a restart would load them, whose events wait on another clock than
    `clocks` (step id to clock) gives; a join with nothing waiting may change clock.

    Like `shard_count_changes`: the joins' bytes, the restricted unpickler, a trusted
    store only. Snapshots before the clock was recorded are on the processing clock.
    """
    found: dict[str, tuple[str, int]] = {}
    for snap in resume_snapshots(store, resume_point(store)):
        of = step_of(snap.step_id)
        if of is None or of.parked or not snap.data or snap.step_id not in clocks:
            continue
        try:
            state = loads(snap.data)
        except Exception:  # Not state of ours: other checks say so.
            continue
        if not isinstance(state, tuple) or len(state) < 3 or not isinstance(state[2], dict):
            continue
        extra = state[4] if len(state) > 4 and isinstance(state[4], dict) else {}
        stored = extra.get("clock", "processing")
        # Held events have no deadline yet: only parked ones are timed.
        waiting = sum(totals[0] for totals in state[2].values())
        if stored != clocks[snap.step_id] and waiting:
            _, before = found.get(snap.step_id, (stored, 0))
            found[snap.step_id] = (stored, before + waiting)
    return [
        ClockChange(step_id, stored, clocks[step_id], waiting)
        for step_id, (stored, waiting) in sorted(found.items())
    ]
