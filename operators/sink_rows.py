"""The sink row: an event's bind values, built once where it leaves its last lookup.

Building the values the database binds right there, instead of a record
that is copied and converted again in the sink, is most of what an event
costs between the join and the database (docs/BENCHMARKS.md, "Lean path:
the sink row"). The column order is defined here, once: the sink's table
(`sinks.table`) builds its schema from `LEADING` and `RowShape.columns`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from operators.records import Event, Joined, MissReason, Outcome, Status, Version

LEADING = (
    "event_id",
    "lookup_id",
    "event_time",
    "status",
    "miss_reason",
    "waited_ms",
    "ref_version",
    "arrival_seq",
)
"""The fixed columns every row starts with, in bind order; the indices below name them."""
EVENT_ID, LOOKUP_ID, EVENT_TIME, STATUS, MISS_REASON, WAITED_MS, REF_VERSION, ARRIVAL_SEQ = range(8)
TRAILING = ("stages", "attributes")
"""The JSON columns every row ends with, after the declared event fields and reference columns."""


_new = tuple.__new__
"""Builds a NamedTuple from its values without its Python-level `__new__`: once per event."""


class SinkRow(NamedTuple):
    """One enriched event as the sink writes it.

    `binds` are the table's values in `RowShape.columns` order, as plain
    Python types any driver binds (status and miss reason as text). `origin`
    names where the event came from, for the dead letter of a row the
    database refuses. `fields` is the event's whole document, kept only when
    an output needs it (the enriched topic), else None: it is the largest
    part of a row to carry between workers.
    """

    binds: tuple[Any, ...]
    origin: str
    fields: dict[str, Any] | None = None

    @property
    def event_id(self) -> str:
        return self.binds[EVENT_ID]

    @property
    def lookup_id(self) -> str:
        return self.binds[LOOKUP_ID]

    @property
    def event_time(self) -> float | None:
        return self.binds[EVENT_TIME]

    @property
    def status(self) -> Status:
        return Status(self.binds[STATUS])


def _number(value: object) -> str:
    """A number as `json.dumps` writes it (`float.__repr__`, `int.__repr__`), without its call."""
    if type(value) is float:
        if math.isfinite(value):
            return float.__repr__(value)
    elif type(value) is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    return json.dumps(value)


_HEADS: dict[tuple[str, str, str | None], str] = {}
"""Each outcome's constant JSON start, by lookup, status and miss reason as plain strings:
an enum member as a key would hash through `Enum.__hash__`, a Python call per row."""


def _head(lookup: str, status: str, reason: str | None) -> str:
    """The constant start of one outcome's JSON object; a chain has a handful of them."""
    key = (lookup, status, reason)
    head = _HEADS.get(key)
    if head is None:
        text = json.dumps(
            {"lookup": lookup, "status": status, "miss_reason": reason}, separators=(",", ":")
        )
        head = _HEADS[key] = text[:-1] + ',"waited_ms":'
    return head


def _stage_json(o: Outcome) -> str:
    reason = o.miss_reason
    head = _head(o.lookup, o.status._value_, None if reason is None else reason._value_)
    return f'{head}{_number(o.waited_ms)},"version":{_number(o.version)}}}'


def stages_json(stages: Sequence[Outcome]) -> str:
    """The `stages` column: each outcome's lookup, status, miss_reason, waited_ms, version.

    Exactly `json.dumps([...], separators=(",", ":"))` of those objects
    (tests/test_sink_rows.py checks it), from cached heads per (lookup,
    status, reason) and the two numbers, instead of a dict and an encoder
    call per row.
    """
    if len(stages) == 1:
        return f"[{_stage_json(stages[0])}]"
    return "[" + ",".join([_stage_json(o) for o in stages]) + "]"


@dataclass(frozen=True)
class RowShape:
    """How an event becomes its sink row, for one table's declared columns.

    `event_columns` are the declared event fields with a column of their own,
    `reference_columns` every lookup's stored columns in chain order;
    `not_attributes` every field that does not go into `attributes` (those
    two, and the fields already in a fixed column). `keep_fields` keeps the
    event's document in the row, for outputs that need it whole.
    """

    event_columns: tuple[str, ...]
    reference_columns: tuple[str, ...]
    not_attributes: frozenset[str]
    keep_fields: bool = False
    _no_reference: tuple[None, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_no_reference", (None,) * len(self.reference_columns))

    def columns(self) -> tuple[str, ...]:
        """Every bound column, in the order of `SinkRow.binds`."""
        return (*LEADING, *self.event_columns, *self.reference_columns, *TRAILING)

    def reference(self, row: SinkRow) -> tuple[Any, ...]:
        """The row's values of `reference_columns`."""
        start = len(LEADING) + len(self.event_columns)
        return row.binds[start : start + len(self.reference_columns)]

    def __call__(
        self,
        event: Event,
        lookup_id: str,
        stages: Sequence[Outcome],
        row: tuple[Any, ...] | None,
        version: Version | None,
        status: Status,
        reason: MissReason | None,
        waited_ms: float,
    ) -> SinkRow:
        """The sink row of a finished event (`operators.chain.finish` calls it).

        `row` is the lookups' values in chain order, ending with the version
        (stored apart as `ref_version`), so only its leading values are bound
        to the reference columns.
        """
        fields = event.fields
        if fields.keys() <= self.not_attributes:
            attributes = None
        else:
            extra = {k: v for k, v in fields.items() if k not in self.not_attributes}
            attributes = json.dumps(extra, sort_keys=True, separators=(",", ":"))
        binds = (
            event.event_id,
            lookup_id,
            event.event_time,
            status._value_,  # `.value` is a property: a Python call per row
            None if reason is None else reason._value_,
            waited_ms,
            version,
            event.seq,
            *map(fields.get, self.event_columns),
            *(self._no_reference if row is None else row[: len(self._no_reference)]),
            stages_json(stages),
            attributes,
        )
        return _new(SinkRow, (binds, event.origin, fields if self.keep_fields else None))

    def of(self, rec: Joined) -> SinkRow:
        """The sink row of a record that needs no finishing (tests, benchmarks, replays)."""
        event = rec.event
        return self(
            event,
            event.lookup_id,
            event.stages,
            rec.row,
            rec.version,
            rec.status,
            rec.miss_reason,
            rec.waited_ms,
        )
