"""The records that flow between steps.

NamedTuples rather than pydantic models: they are created once per event on
the hot path, where a tuple costs a fraction of a model, and they pickle
compactly into recovery snapshots. Validation happens once, in `decode`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, NamedTuple

FieldType = Literal["str", "int", "float", "bool"]
"""The types a declared event field or reference column may have."""

ValidFrom = Literal["version", "field", "record_time"]
"""Where an as-of lookup reads a row's validity time: its version, a field, the record's time."""

Version = int | float
"""A reference row version: a number, or a timestamp as epoch seconds."""


class Kind(StrEnum):
    EVENT = "event"
    REFERENCE = "reference"


class RawRecord(NamedTuple):
    """Bytes as a source delivered them, before any validation.

    `origin` says where the record came from (`source/topic/partition/offset`)
    so a dead letter can point back at it and an event without an id gets one
    that is stable across replays. `replay` marks a reference record re-read
    to rebuild state after a restart: it restores a row but must not release
    or re-dead-letter anything, because its effects were already committed.
    `lookup` names the lookup a reference record belongs to (empty for events).
    """

    kind: Kind
    key: bytes | None
    value: bytes | None
    origin: str
    replay: bool = False
    lookup: str = ""
    timestamp: float | None = None
    """The record's own time in epoch seconds (a Kafka record's timestamp; the demo's
    planned time), None where the source has none: a reference record's time for
    event-time timeouts and row TTL, and its validity time when a lookup says so."""


class Event(NamedTuple):
    """A validated event, as one lookup of the chain sees it.

    `fields` is the whole decoded JSON object, with declared fields coerced to
    their declared types, so nothing the producer sent is lost; each lookup
    passed adds its (prefixed) columns. `lookup_id` is this lookup's key, empty
    when the event has none. `stages` holds the outcomes of the lookups
    already passed, so a final record can report every one. `seq` orders the
    copies of one event id by their arrival (`operators.arrival`): a late copy
    and a later one that hit leave the chain by different steps, so the sink
    keeps the row of the highest `seq`, not of the last write.
    """

    event_id: str
    lookup_id: str
    event_time: float | None
    fields: dict[str, Any]
    origin: str
    stages: tuple[Outcome, ...] = ()
    seq: int = 0


class RefUpdate(NamedTuple):
    """A validated reference update; `row` is None for a tombstone.

    `row` holds only the projected columns, in configured order, so state
    never carries columns nobody asked for.
    """

    lookup_id: str
    row: tuple[Any, ...] | None
    version: Version | None
    origin: str
    replay: bool = False
    filtered: bool = False
    """A row the lookup's filter left out: it deletes like a tombstone."""
    at: float | None = None
    """The record's time (`RawRecord.timestamp`), None if its source has none."""
    valid_from: float | None = None
    """From when the row (or, for a tombstone, the key's absence) holds, for an as-of
    lookup: the version read as a time, a configured field, or the record's time."""


class CaughtUp(NamedTuple):
    """A reference source partition has read up to the end it saw at start.

    Rows are rebuilt on every start by re-reading the reference source, so
    until every partition of it has caught up a missing row may only be not
    read yet: the join holds events back rather than count them as misses.
    `partitions` is how many partitions the reference source has, so each
    shard knows when it has heard from all of them; `lookup` names the lookup
    whose reference source it is.
    """

    source: str
    partitions: int
    lookup: str


class PartitionTime(NamedTuple):
    """The largest event time one event partition has shown so far, for event-time
    timeouts (`operators.event_clock`): sent to every shard of such a lookup, after
    the events it covers. `partitions` is how many event partitions there are,
    0 when the source does not say."""

    partition: str
    high: float
    partitions: int = 0


class Status(StrEnum):
    ENRICHED = "enriched"
    LATE_ENRICHED = "late_enriched"
    LOOKUP_MISS = "lookup_miss"


class MissReason(StrEnum):
    """Why a pending event stopped waiting for its reference row."""

    TIMEOUT = "timeout"
    OVERFLOW = "overflow"
    END_OF_INPUT = "end_of_input"
    MISSING_KEY = "missing_key"
    """An earlier lookup left the field holding this lookup's key empty."""
    BEFORE_HISTORY = "before_history"
    """An as-of lookup: the event is older than the versions its key still keeps."""
    ROW_EXPIRED = "row_expired"
    """The key's row was dropped for not being refreshed within the lookup's row TTL."""


class Outcome(NamedTuple):
    """What one lookup of the chain did with an event."""

    lookup: str
    status: Status
    miss_reason: MissReason | None
    waited_ms: float
    version: Version | None


class Joined(NamedTuple):
    """An event after a lookup: the reference row it was joined with and its status.

    Not "enriched": a miss is one too, with no row (or the defaults row) and its
    miss reason, so every event leaves a lookup as exactly one `Joined` or a
    dead letter.
    """

    event: Event
    row: tuple[Any, ...] | None
    version: Version | None
    status: Status
    miss_reason: MissReason | None
    waited_ms: float


class DeadLetter(NamedTuple):
    """A record that could not be processed, with why and where from."""

    reason: str
    detail: str
    payload: bytes | None
    key: bytes | None
    origin: str
