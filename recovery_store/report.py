"""Summarise a recovery store: what is stored, and what a restart would load.

Only the snapshots a restart would load are decoded, with the restricted
unpickler; older ones kept for backups are counted and measured, never opened.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from operators.enrichment import HELD, Pending
from operators.event_clock import restored
from operators.lookup_steps import shard_of_segment, step_of
from operators.parking import waiting_in
from operators.records import Event
from operators.waiting import loads_untrusted
from recovery_store.resume import ResumePoint, resume_point, resume_problems, resume_snapshots
from recovery_store.store import Snapshot, Store
from recovery_store.unpickle import loads

ROW_NOTE = (
    "reference rows and their versions are not stored in snapshots: the dataflow rebuilds "
    "them from the reference source on every start"
)


class SnapshotError(Exception):
    """A snapshot a restart would load could not be decoded; the message says which one."""


@dataclass(frozen=True)
class PartitionReport:
    index: int
    file: str
    part_count: int
    created_at: str
    file_bytes: int
    commit_epoch: int | None
    snapshots: int
    snapshot_bytes: int


@dataclass(frozen=True)
class ExecutionReport:
    ex_num: int
    worker_count: int
    resume_epoch: int
    started_at: str
    frontiers: dict[int, int]
    """Worker index to the last epoch it finished; workers that wrote none are absent."""


@dataclass(frozen=True)
class StepReport:
    step_id: str
    snapshots: int
    """Stored rows over every epoch kept, discards included."""
    bytes: int
    discards: int
    """Rows without bytes: the step dropped that key in that epoch."""
    oldest_epoch: int
    newest_epoch: int
    keys_at_resume: int
    bytes_at_resume: int
    kinds_at_resume: dict[str, int]
    """How many resumed states are of each kind: `pending`, `int`, `none` or a type name."""
    positions: dict[str, int]
    """Integer states at resume by key: source offsets and file positions."""


@dataclass(frozen=True)
class PendingLookup:
    lookup: str
    """The lookup (of `ENRICH_LOOKUPS`) whose row the events wait for."""
    lookup_id: str
    shard: str
    """The shard of the lookup's join: the same for every event of one lookup id."""
    events: int
    segments: int
    """How many segments hold its parked events; held events wait in the join."""
    earliest_deadline: float | None
    """None when every one of its events is held (see `PendingEvent.deadline`)."""


@dataclass(frozen=True)
class LookupWaiting:
    """One lookup's join and segments as a restart would load them."""

    lookup: str
    step_ids: list[str]
    shards: int
    """Shard keys of the join (`enrich_<lookup>`)."""
    shards_with_pending: int
    """Shards with waiting events, held in the join or parked in one of its segments."""
    segments: int
    """State keys of `park_<lookup>`: one per shard and second in which events missed."""
    events_pending: int
    """Every waiting event: held in the join plus parked in the segments."""
    events_held: int
    """Of them, those held in the join until the reference source has caught up."""
    lookup_ids_pending: int
    oldest_arrival: float | None
    earliest_deadline: float | None
    latest_deadline: float | None
    watermark: float | None = None
    """On the event clock, the lowest watermark of the join's shards (deadlines are then
    event times); None on the processing clock."""


@dataclass(frozen=True)
class EnrichmentReport:
    """The sums over `lookups`; lookup ids are counted per lookup."""

    step_ids: list[str]
    shards_held: int
    """Shard keys of the joins; segments are counted apart, in `segments`."""
    shards_with_pending: int
    segments: int
    events_pending: int
    events_held: int
    """Of the pending events, those held until the reference source has caught up."""
    lookup_ids_pending: int
    oldest_arrival: float | None
    earliest_deadline: float | None
    latest_deadline: float | None
    lookups: list[LookupWaiting]
    most_pending: list[PendingLookup]


@dataclass(frozen=True)
class Report:
    directory: str
    partitions: list[PartitionReport]
    executions: list[ExecutionReport]
    next_execution: int
    resume_epoch: int
    steps: list[StepReport]
    enrichment: EnrichmentReport
    problems: list[str]


@dataclass(frozen=True)
class PendingEvent:
    event_id: str
    lookup: str
    shard: str
    segment: str | None
    """The state key of the segment it is parked in; None while it waits in the join."""
    arrived: float
    deadline: float | None
    """None while held: the timeout starts once the reference source has caught up."""
    event_time: float | None
    origin: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class KeyReport:
    lookup_id: str
    resume_epoch: int
    pending: list[PendingEvent]
    note: str = ROW_NOTE
    problems: list[str] = field(default_factory=list)
    """Waiting events left out because their content is invalid (see `Report.problems`)."""


@dataclass(frozen=True)
class _Decoded:
    snap: Snapshot
    state: object
    kind: str
    watermark: float | None = None


class _Place(NamedTuple):
    """Where a waiting event is: its lookup, the join's shard and the segment, if parked."""

    lookup: str
    shard: str
    segment: str | None


def _place(snap: Snapshot) -> _Place:
    step = step_of(snap.step_id)
    if step is None:  # a version with one enrichment step, keyed by shard
        return _Place(snap.step_id.split(".", 1)[-1], snap.state_key, None)
    if step.parked:
        return _Place(step.lookup, shard_of_segment(snap.state_key)[0], snap.state_key)
    return _Place(step.lookup, snap.state_key, None)


def _is_pending_list(state: object) -> bool:
    return isinstance(state, list) and all(
        isinstance(waiting, Pending) and isinstance(waiting.event, Event) for waiting in state
    )


def _is_encoded_list(state: object) -> bool:
    """Waiting events as the enrichment step keeps them (`operators.waiting`)."""
    return isinstance(state, list) and bool(state) and all(type(item) is bytes for item in state)


def _is_join_state(state: object) -> bool:
    """A parking join's state: its held events, its book, its segments' totals and (since
    they were recorded) the shard count and the event clock's and as-of lookups' parts
    (`operators.parking.JoinState`)."""
    return (
        isinstance(state, tuple)
        and len(state) in (3, 4, 5)
        and isinstance(state[0], list)
        and all(type(item) is bytes for item in state[0])
        and isinstance(state[1], dict)
        and isinstance(state[2], dict)
    )


def _kind(state: object) -> str:
    if state is None:
        return "none"
    if _is_pending_list(state):
        return "pending"
    return type(state).__name__


def _time_problem(name: str, value: object, none_ok: bool = False) -> str | None:
    """Why `value` is not epoch seconds a timestamp can show; None when it is."""
    if value is None and none_ok:
        return None
    if type(value) not in (int, float):
        return f"{name} {value!r:.80} is not a number of seconds"
    try:
        datetime.fromtimestamp(value, UTC)  # type: ignore[arg-type]
    except (ValueError, OverflowError, OSError):
        return f"{name} {value!r} is not a time"
    return None


def _content_problem(waiting: Pending) -> str | None:
    """Why a waiting event cannot be shown, or None: snapshots are read, not trusted.

    The restricted unpickler guarantees the types of the containers, not what
    they hold; a store written by hand or by another version may hold anything.
    """
    event = waiting.event
    for name in ("event_id", "lookup_id", "origin"):
        if type(getattr(event, name)) is not str:
            return f"{name} {getattr(event, name)!r:.80} is not text"
    problem = (
        _time_problem("event time", event.event_time, none_ok=True)
        or _time_problem("arrival", waiting.arrived)
        or (None if waiting.deadline == HELD else _time_problem("deadline", waiting.deadline))
    )
    if problem:
        return problem
    try:
        json.dumps(event.fields, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"fields are not JSON ({exc})"
    return None if type(event.fields) is dict else "fields are not a JSON object"


def _decode(snaps: Iterable[Snapshot]) -> list[_Decoded]:
    decoded: list[_Decoded] = []
    for snap in snaps:
        if snap.data is None:
            continue
        watermark = None
        try:
            state = loads(snap.data)
            if _is_join_state(state):
                watermark = _watermark(state)  # type: ignore[arg-type]
            if _is_encoded_list(state) or _is_join_state(state):
                state = waiting_in(state, loads_untrusted)
        except Exception as exc:
            raise SnapshotError(
                f"snapshot of step {snap.step_id!r} key {snap.state_key!r} epoch {snap.epoch} "
                f"(partition {snap.part_index}) cannot be decoded: {exc}"
            ) from exc
        decoded.append(_Decoded(snap, state, _kind(state), watermark))
    return decoded


def _watermark(state: tuple[object, ...]) -> float | None:
    """The event clock's watermark a join snapshot holds, if it holds one."""
    extra = state[4] if len(state) > 4 else None
    clock = restored(extra.get("watermark")) if isinstance(extra, dict) else None
    if clock is None or type(clock[1]) is not float or not math.isfinite(clock[1]):
        return None
    return clock[1]


def _deadline(waiting: Pending) -> float | None:
    return None if waiting.deadline == HELD else waiting.deadline


def _deadlines(waits: Iterable[Pending]) -> list[float]:
    """The deadlines that are running: held events have none yet."""
    return [waiting.deadline for waiting in waits if waiting.deadline != HELD]


def _pending(decoded: Iterable[_Decoded]) -> Iterable[tuple[_Place, Pending]]:
    """Every waiting event a restart would restore, with where it waits."""
    for item in decoded:
        if item.kind == "pending":
            place = _place(item.snap)
            for waiting in item.state:  # type: ignore[attr-defined]
                yield place, waiting


def _partitions(store: Store) -> list[PartitionReport]:
    commits = {commit.part_index: commit.epoch for commit in store.commits}
    counts = Counter(snap.part_index for snap in store.snapshots)
    sizes = Counter[int]()
    for snap in store.snapshots:
        sizes[snap.part_index] += len(snap.data or b"")
    return [
        PartitionReport(
            part.index,
            part.file,
            part.count,
            part.created_at,
            part.file_bytes,
            commits.get(part.index),
            counts[part.index],
            sizes[part.index],
        )
        for part in store.partitions
    ]


def _executions(store: Store) -> list[ExecutionReport]:
    fronts: dict[int, dict[int, int]] = defaultdict(dict)
    for front in store.frontiers:
        fronts[front.ex_num][front.worker_index] = front.epoch
    return [
        ExecutionReport(
            ex.ex_num, ex.worker_count, ex.resume_epoch, ex.created_at, fronts[ex.ex_num]
        )
        for ex in store.executions
    ]


def _steps(store: Store, decoded: list[_Decoded]) -> list[StepReport]:
    stored: dict[str, list[Snapshot]] = defaultdict(list)
    for snap in store.snapshots:
        stored[snap.step_id].append(snap)
    resumed: dict[str, list[_Decoded]] = defaultdict(list)
    for item in decoded:
        resumed[item.snap.step_id].append(item)
    steps = []
    for step_id, snaps in sorted(stored.items()):
        epochs = [snap.epoch for snap in snaps]
        at_resume = resumed[step_id]
        steps.append(
            StepReport(
                step_id,
                len(snaps),
                sum(len(snap.data or b"") for snap in snaps),
                sum(1 for snap in snaps if snap.data is None),
                min(epochs),
                max(epochs),
                len(at_resume),
                sum(len(item.snap.data or b"") for item in at_resume),
                dict(Counter(item.kind for item in at_resume)),
                {item.snap.state_key: item.state for item in at_resume if type(item.state) is int},
            )
        )
    return steps


def _lookup_waiting(lookup: str, items: list[_Decoded]) -> LookupWaiting:
    places = [_place(item.snap) for item in items]
    waits = [waiting for _, waiting in _pending(items)]
    deadlines = _deadlines(waits)
    return LookupWaiting(
        lookup,
        sorted({item.snap.step_id for item in items}),
        len({place.shard for place in places if place.segment is None}),
        len({place.shard for place, item in zip(places, items, strict=True) if item.state}),
        sum(1 for place in places if place.segment is not None),
        len(waits),
        len(waits) - len(deadlines),
        len({waiting.event.lookup_id for waiting in waits}),
        min((waiting.arrived for waiting in waits), default=None),
        min(deadlines, default=None),
        max(deadlines, default=None),
        min((item.watermark for item in items if item.watermark is not None), default=None),
    )


def _most_pending(decoded: list[_Decoded], top: int) -> list[PendingLookup]:
    per_id: dict[tuple[str, str], list[tuple[_Place, Pending]]] = defaultdict(list)
    for place, waiting in _pending(decoded):
        per_id[place.lookup, waiting.event.lookup_id].append((place, waiting))
    ranked = sorted(per_id.items(), key=lambda entry: (-len(entry[1]), entry[0][1], entry[0][0]))
    return [
        PendingLookup(
            lookup,
            lookup_id,
            shard=entries[0][0].shard,
            events=len(entries),
            segments=len({place.segment for place, _ in entries if place.segment is not None}),
            earliest_deadline=min(_deadlines(waiting for _, waiting in entries), default=None),
        )
        for (lookup, lookup_id), entries in ranked[:top]
    ]


def _enrichment(decoded: list[_Decoded], top: int) -> EnrichmentReport:
    """Per lookup, its join's shards and held events and its segments' parked events."""
    per_lookup: dict[str, list[_Decoded]] = defaultdict(list)
    for item in decoded:
        if item.kind == "pending":
            per_lookup[_place(item.snap).lookup].append(item)
    lookups = [_lookup_waiting(lookup, items) for lookup, items in sorted(per_lookup.items())]
    arrivals = [each.oldest_arrival for each in lookups if each.oldest_arrival is not None]
    earliest = [each.earliest_deadline for each in lookups if each.earliest_deadline is not None]
    latest = [each.latest_deadline for each in lookups if each.latest_deadline is not None]
    return EnrichmentReport(
        sorted(step_id for each in lookups for step_id in each.step_ids),
        sum(each.shards for each in lookups),
        sum(each.shards_with_pending for each in lookups),
        sum(each.segments for each in lookups),
        sum(each.events_pending for each in lookups),
        sum(each.events_held for each in lookups),
        sum(each.lookup_ids_pending for each in lookups),
        min(arrivals, default=None),
        min(earliest, default=None),
        max(latest, default=None),
        lookups,
        _most_pending(decoded, top),
    )


def _screen(decoded: list[_Decoded]) -> tuple[list[_Decoded], list[str]]:
    """Leave out waiting events with invalid content, each named as a problem."""
    kept: list[_Decoded] = []
    problems: list[str] = []
    for item in decoded:
        if item.kind != "pending":
            kept.append(item)
            continue
        valid: list[Any] = []
        waiting: Any
        for position, waiting in enumerate(item.state):  # type: ignore[arg-type]
            problem = _content_problem(waiting)
            if problem is None:
                valid.append(waiting)
            else:
                snap = item.snap
                problems.append(
                    f"invalid: snapshot of step {snap.step_id!r} key {snap.state_key!r} epoch "
                    f"{snap.epoch} (partition {snap.part_index}), waiting event {position}: "
                    f"{problem}; left out of the figures"
                )
        kept.append(_Decoded(item.snap, valid, item.kind, item.watermark))
    return kept, problems


def _at_resume(store: Store) -> tuple[ResumePoint, list[_Decoded], list[str]]:
    point = resume_point(store)
    decoded, problems = _screen(_decode(resume_snapshots(store, point)))
    return point, decoded, problems


def build_report(store: Store, top: int = 10) -> Report:
    """The whole store; `top` bounds the list of lookup ids with the most pending events."""
    point, decoded, invalid = _at_resume(store)
    return Report(
        str(store.directory),
        _partitions(store),
        _executions(store),
        point.execution,
        point.epoch,
        _steps(store, decoded),
        _enrichment(decoded, top),
        [*resume_problems(store, point), *invalid],
    )


def build_key_report(store: Store, lookup_id: str) -> KeyReport:
    """One lookup id's waiting events as a restart would restore them, oldest first."""
    point, decoded, invalid = _at_resume(store)
    events = sorted(
        (
            PendingEvent(
                waiting.event.event_id,
                place.lookup,
                place.shard,
                place.segment,
                waiting.arrived,
                _deadline(waiting),
                waiting.event.event_time,
                waiting.event.origin,
                waiting.event.fields,
            )
            for place, waiting in _pending(decoded)
            if waiting.event.lookup_id == lookup_id
        ),
        key=lambda event: (event.arrived, event.lookup),
    )
    return KeyReport(lookup_id, point.epoch, events, problems=invalid)
