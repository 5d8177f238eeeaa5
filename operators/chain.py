"""Between the lookups of a chain: hand an event on, then fold every outcome into one record.

Each lookup is its own stateful step keyed by its own key, so an event
leaves one lookup as `Joined` and enters the next as an `Event` that
carries the columns the previous lookups added (the next key may be one of
them) and their outcomes. After the last lookup the outcomes become the one
record the sinks write.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from operators.records import Event, Joined, MissReason, Outcome, Status, Version

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class Stage:
    """One lookup as the chain sees it: its name and the event fields its row fills."""

    name: str
    columns: tuple[str, ...]


_new = tuple.__new__
"""Builds a NamedTuple from its values without its Python-level `__new__`: once per event."""


def _outcome(stage: Stage, rec: Joined) -> Outcome:
    return _new(Outcome, (stage.name, rec.status, rec.miss_reason, rec.waited_ms, rec.version))


def _values(stage: Stage, rec: Joined) -> Iterable[object]:
    """The row's values for the stage's columns; all None when the row is missing."""
    row = rec.row
    return (None,) * len(stage.columns) if row is None else row[: len(stage.columns)]


def advance(rec: Joined, stage: Stage, next_key: str) -> Event:
    """The event as the next lookup sees it, keyed by `next_key`.

    A key that is missing, empty or not text or a whole number gives an empty
    `lookup_id`, which the next lookup turns into a `missing_key` miss under
    its own policy. Runs once per event per hand-on: the fields are copied
    once and the `Event` built without its Python-level `__new__`.
    """
    event = rec.event
    fields = event.fields.copy()
    row = rec.row
    columns = stage.columns
    if row is None:
        fields.update(dict.fromkeys(columns))
    else:
        fields.update(zip(columns, row, strict=False))  # the row: columns, then version
    key = fields.get(next_key)
    kind = type(key)
    if kind is str:
        lookup_id = key
    elif isinstance(key, str | int) and kind is not bool:
        lookup_id = str(key)
    else:
        lookup_id = ""
    return _new(
        Event,
        (
            event.event_id,
            lookup_id,
            event.event_time,
            fields,
            event.origin,
            (*event.stages, _outcome(stage, rec)),
            event.seq,
        ),
    )


def overall(stages: Sequence[Outcome]) -> tuple[Status, MissReason | None]:
    """A miss anywhere makes the record a miss (with the first reason); else late if any was."""
    late = False
    for outcome in stages:
        status = outcome.status
        if status is Status.LOOKUP_MISS:
            return status, outcome.miss_reason
        late = late or status is Status.LATE_ENRICHED
    return (Status.LATE_ENRICHED if late else Status.ENRICHED), None


class Finisher(Protocol[T_co]):
    """What `finish` hands a finished event's parts to (`operators.sink_rows.RowShape`)."""

    def __call__(
        self,
        event: Event,
        lookup_id: str,
        stages: tuple[Outcome, ...],
        row: tuple[Any, ...] | None,
        version: Version | None,
        status: Status,
        reason: MissReason | None,
        waited_ms: float,
    ) -> T_co: ...


def joined(
    event: Event,
    lookup_id: str,
    stages: tuple[Outcome, ...],
    row: tuple[Any, ...] | None,
    version: Version | None,
    status: Status,
    reason: MissReason | None,
    waited_ms: float,
) -> Joined:
    """The finished event as one `Joined` record, for whatever reads records; the dataflow
    hands `finish` the sink's `RowShape` instead, so no record is built only to be copied."""
    return Joined(
        event._replace(lookup_id=lookup_id, stages=stages), row, version, status, reason, waited_ms
    )


def finish(
    rec: Joined,
    last: Stage,
    earlier: tuple[str, ...],
    lookup_field: str,
    into: Finisher[T] = joined,  # type: ignore[assignment]
) -> T:
    """The chain's record: every lookup's values in chain order, and every outcome.

    `earlier` names the columns earlier lookups added to the event. The
    lookup id and version are the first lookup's, the ones the event is
    about; each lookup's own version is in its outcome. A one-lookup chain
    keeps the record as it is, adding only its outcome. `into` builds what
    comes out from the parts, once: a `Joined` by default, or the sink's row.
    """
    event = rec.event
    stages = (*event.stages, _outcome(last, rec))
    if not event.stages:
        return into(
            event,
            event.lookup_id,
            stages,
            rec.row,
            rec.version,
            rec.status,
            rec.miss_reason,
            rec.waited_ms,
        )
    fields = event.fields
    version = stages[0].version
    row = (*map(fields.get, earlier), *_values(last, rec), version)
    status, reason = overall(stages)
    waited_ms = sum([outcome.waited_ms for outcome in stages])
    return into(event, str(fields[lookup_field]), stages, row, version, status, reason, waited_ms)
