"""Summarise a recovery store: what is stored, and what a restart would load.

Only the snapshots a restart would load are decoded, with the restricted
unpickler; older ones kept for backups are counted and measured, never opened.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from operators.enrichment import HELD, Pending
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
    lookup_id: str
    shard: str
    events: int
    earliest_deadline: float | None
    """None when every one of its events is held (see `PendingEvent.deadline`)."""


@dataclass(frozen=True)
class EnrichmentReport:
    step_ids: list[str]
    shards_held: int
    shards_with_pending: int
    events_pending: int
    events_held: int
    """Of the pending events, those held until the reference source has caught up."""
    lookup_ids_pending: int
    oldest_arrival: float | None
    earliest_deadline: float | None
    latest_deadline: float | None
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
    shard: str
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


def _is_pending_list(state: object) -> bool:
    return isinstance(state, list) and all(
        isinstance(waiting, Pending) and isinstance(waiting.event, Event) for waiting in state
    )


def _is_encoded_list(state: object) -> bool:
    """Waiting events as the enrichment step keeps them (`operators.waiting`)."""
    return isinstance(state, list) and bool(state) and all(type(item) is bytes for item in state)


def _is_join_state(state: object) -> bool:
    """A parking join's state: its held events, its book and its segments' totals."""
    return (
        isinstance(state, tuple)
        and len(state) == 3
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
        try:
            state = loads(snap.data)
            if _is_encoded_list(state) or _is_join_state(state):
                state = waiting_in(state, loads_untrusted)
        except Exception as exc:
            raise SnapshotError(
                f"snapshot of step {snap.step_id!r} key {snap.state_key!r} epoch {snap.epoch} "
                f"(partition {snap.part_index}) cannot be decoded: {exc}"
            ) from exc
        decoded.append(_Decoded(snap, state, _kind(state)))
    return decoded


def _deadline(waiting: Pending) -> float | None:
    return None if waiting.deadline == HELD else waiting.deadline


def _deadlines(waits: Iterable[Pending]) -> list[float]:
    """The deadlines that are running: held events have none yet."""
    return [waiting.deadline for waiting in waits if waiting.deadline != HELD]


def _pending(decoded: Iterable[_Decoded]) -> Iterable[tuple[str, Pending]]:
    """Every waiting event a restart would restore, with the shard key holding it."""
    for item in decoded:
        if item.kind == "pending":
            for waiting in item.state:  # type: ignore[attr-defined]
                yield item.snap.state_key, waiting


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


def _enrichment(decoded: list[_Decoded], top: int) -> EnrichmentReport:
    shards = [item for item in decoded if item.kind == "pending"]
    pending = list(_pending(shards))
    per_lookup: dict[str, list[tuple[str, Pending]]] = defaultdict(list)
    for shard, waiting in pending:
        per_lookup[waiting.event.lookup_id].append((shard, waiting))
    ranked = sorted(per_lookup.items(), key=lambda entry: (-len(entry[1]), entry[0]))
    waits = [waiting for _, waiting in pending]
    deadlines = _deadlines(waits)
    return EnrichmentReport(
        sorted({item.snap.step_id for item in shards}),
        len(shards),
        sum(1 for item in shards if item.state),
        len(pending),
        len(waits) - len(deadlines),
        len(per_lookup),
        min((w.arrived for w in waits), default=None),
        min(deadlines, default=None),
        max(deadlines, default=None),
        [
            PendingLookup(
                lookup_id,
                entries[0][0],
                len(entries),
                min(_deadlines(w for _, w in entries), default=None),
            )
            for lookup_id, entries in ranked[:top]
        ],
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
        kept.append(_Decoded(item.snap, valid, item.kind))
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
                shard,
                waiting.arrived,
                _deadline(waiting),
                waiting.event.event_time,
                waiting.event.origin,
                waiting.event.fields,
            )
            for shard, waiting in _pending(decoded)
            if waiting.event.lookup_id == lookup_id
        ),
        key=lambda event: event.arrived,
    )
    return KeyReport(lookup_id, point.epoch, events, problems=invalid)
