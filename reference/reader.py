"""Database rows into reference records: key, JSON value with a version, or a reason not to.

The change column doubles as the row's version, so the dataflow can ignore a
record older than the row it holds: numbers go as they are, DATE and
TIMESTAMP values as epoch seconds (a value without a time zone is read as
UTC; only the order matters to the dataflow).

A value the dataflow's decode would refuse holds its row back instead of
going out to be dead-lettered there: NaN or ±infinity (as an Oracle
BINARY_DOUBLE can hold), which JSON cannot carry, and whatever
`operators.decode.ReferenceSchema` refuses for the lookup's declared
columns (an int beyond 64 bits, text over 1,000 characters, a value not of
its column's type). The row is `HELD_BACK`, named by the rule it breaks, and
the key's earlier record stays in the topic. In the change column a NaN or
infinity stops the load: it cannot be ordered, and as the watermark it would
end every later incremental read.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from pydantic_core import to_json

from operators.decode import Invalid, ReferenceSchema, finite, non_finite_at, valid_version
from operators.filters import Condition, Predicate, all_of
from operators.records import Kind, RawRecord
from operators.times import epoch_seconds


class RowKind(StrEnum):
    """What a row means for the topic (not `operators.records.Outcome`, a lookup's result)."""

    LIVE = "live"
    """Published with its value."""
    DELETED = "deleted"
    """The soft-delete column is set: the key must go."""
    FILTERED_OUT = "filtered_out"
    """The filter does not hold: the key must not be live."""
    NO_KEY = "no_key"
    """The key column is NULL: nothing can be published for it."""
    HELD_BACK = "held_back"
    """The dataflow's decode would refuse a value (`Record.rule` says why): held back, the
    topic keeps the key's earlier record (neither overwritten nor tombstoned)."""


NOT_FINITE = "not_finite"
"""The rule of a value JSON cannot carry (NaN, ±infinity); other rules are decode's reasons."""

NO_LIMIT = 2**62
"""The record size decode is given: the dataflow's ENRICH_MAX_RECORD_BYTES is not read here."""


class Record(NamedTuple):
    key: bytes | None
    value: bytes | None
    """The JSON value for a live row; None otherwise."""
    change: Any
    """The change column's value as the database gave it: the watermark candidate."""
    kind: RowKind
    column: str = ""
    """For a HELD_BACK row: the first column whose value decode would refuse."""
    bad_value: Any = None
    """For a HELD_BACK row: that value."""
    rule: str = ""
    """For a HELD_BACK row: `NOT_FINITE`, or the reason decode would dead-letter it with."""
    detail: str = ""
    """For a HELD_BACK row: what is wrong, in decode's words."""


def version_of(change: Any) -> int | float | None:
    """The version the dataflow compares: a number, or a timestamp as epoch seconds.

    Text is read as an ISO 8601 timestamp, the way SQLite stores them; a time
    without an offset is UTC, as in the dataflow (`operators.times`).
    """
    if change is None or isinstance(change, int | float):
        return _orderable_change(change)
    if isinstance(change, str | datetime):
        with suppress(ValueError):
            return epoch_seconds(change)
    raise ValueError(
        f"the change column holds {change!r}; it must be a number, a DATE or a TIMESTAMP"
    )


def _orderable_change(change: Any) -> Any:
    """The change value, unless decode would refuse the number as a version.

    NaN cannot order rows, and a watermark of infinity (or of a number beyond
    64 bits) would leave every later row unread or held back.
    """
    if type(change) is float and not finite([change]):
        raise ValueError(
            f"the change column holds {change!r}; it must be a finite number, a DATE or a "
            "TIMESTAMP (NaN cannot be ordered, and an infinity as the watermark would end "
            "every later incremental load): fix the row; the watermark does not pass it"
        )
    if isinstance(change, int | float):
        try:
            valid_version(change, "version")
        except Invalid as refused:
            raise ValueError(
                f"the change column holds {change!r}, which the dataflow's decode refuses as "
                f"a version ({refused.detail}); every later row would be held back behind it "
                "as the watermark: fix the row; the watermark does not pass it"
            ) from None
    return change


@dataclass(frozen=True)
class RecordBuilder:
    """Turns rows of `selected` columns (in that order) into records.

    `schema` is the lookup's as the dataflow decodes it: each record about to
    be published goes through its `decode`, so the one definition of what the
    dataflow accepts decides what is held back.
    """

    selected: Sequence[str]
    key_column: str
    columns: Sequence[str]
    change_column: str
    version_field: str
    soft_delete_column: str | None = None
    conditions: Sequence[Condition] = ()
    schema: ReferenceSchema | None = None
    _at: dict[str, int] = field(init=False, repr=False, compare=False)
    _matches: Predicate | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_at", {name: i for i, name in enumerate(self.selected)})
        object.__setattr__(self, "_matches", all_of(self.conditions))

    def record(self, row: Sequence[Any]) -> Record:
        at = self._at
        change = _orderable_change(row[at[self.change_column]])
        key = row[at[self.key_column]]
        if key is None:
            return Record(None, None, change, RowKind.NO_KEY)
        key_bytes = str(key).encode()
        if self.soft_delete_column is not None and row[at[self.soft_delete_column]] is not None:
            return Record(key_bytes, None, change, RowKind.DELETED)
        matches = self._matches
        if matches is not None and not matches(dict(zip(self.selected, row, strict=True))):
            return Record(key_bytes, None, change, RowKind.FILTERED_OUT)
        value = {name: row[at[name]] for name in self.columns}
        value[self.version_field] = version_of(change)
        if not finite(value):
            column = non_finite_at(value)
            detail = "a NaN or infinite value, which JSON cannot carry"
            return self._held(key_bytes, change, column, value[column], NOT_FINITE, detail)
        payload = to_json(value)
        if self.schema is not None:
            try:
                self.schema.decode(RawRecord(Kind.REFERENCE, key_bytes, payload, ""), NO_LIMIT)
            except Invalid as refused:
                column = refused.field if refused.field in value else self.key_column
                bad = key if column == self.key_column else value[column]
                return self._held(key_bytes, change, column, bad, refused.reason, refused.detail)
        return Record(key_bytes, payload, change, RowKind.LIVE)

    @staticmethod
    def _held(key: bytes, change: Any, column: str, bad: Any, rule: str, detail: str) -> Record:
        return Record(key, None, change, RowKind.HELD_BACK, column, bad, rule, detail)
