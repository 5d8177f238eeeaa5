"""Database rows into reference records: key, JSON value with a version, or a reason not to.

The change column doubles as the row's version, so the dataflow can ignore a
record older than the row it holds: numbers go as they are, DATE and
TIMESTAMP values as epoch seconds (a value without a time zone is read as
UTC; only the order matters to the dataflow).

A value JSON cannot carry (NaN, ±infinity, as an Oracle BINARY_DOUBLE can
hold) holds its row back instead of going out as a `NaN` or `Infinity`
literal that the dataflow and other consumers refuse: the row is
`NOT_FINITE`, and the key's earlier record stays in the topic. In the
change column such a value stops the load: it cannot be ordered, and as the
watermark it would end every later incremental read.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from pydantic_core import to_json

from operators.decode import finite, non_finite_at
from operators.filters import Condition, Predicate, all_of
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
    NOT_FINITE = "not_finite"
    """A value is NaN or infinite, which JSON cannot carry: held back, the topic keeps the key's
    earlier record (neither overwritten nor tombstoned)."""


class Record(NamedTuple):
    key: bytes | None
    value: bytes | None
    """The JSON value for a live row; None otherwise."""
    change: Any
    """The change column's value as the database gave it: the watermark candidate."""
    kind: RowKind
    column: str = ""
    """For a NOT_FINITE row: the first column whose value JSON cannot carry."""
    bad_value: float | None = None
    """For a NOT_FINITE row: that value."""


def version_of(change: Any) -> int | float | None:
    """The version the dataflow compares: a number, or a timestamp as epoch seconds.

    Text is read as an ISO 8601 timestamp, the way SQLite stores them; a time
    without an offset is UTC, as in the dataflow (`operators.times`).
    """
    if change is None or isinstance(change, int | float):
        return _finite_change(change)
    if isinstance(change, str | datetime):
        with suppress(ValueError):
            return epoch_seconds(change)
    raise ValueError(
        f"the change column holds {change!r}; it must be a number, a DATE or a TIMESTAMP"
    )


def _finite_change(change: Any) -> Any:
    """The change value, unless it is a NaN or infinite float: it cannot order rows."""
    if type(change) is float and not finite([change]):
        raise ValueError(
            f"the change column holds {change!r}; it must be a finite number, a DATE or a "
            "TIMESTAMP (NaN cannot be ordered, and an infinity as the watermark would end "
            "every later incremental load): fix the row; the watermark does not pass it"
        )
    return change


@dataclass(frozen=True)
class RecordBuilder:
    """Turns rows of `selected` columns (in that order) into records."""

    selected: Sequence[str]
    key_column: str
    columns: Sequence[str]
    change_column: str
    version_field: str
    soft_delete_column: str | None = None
    conditions: Sequence[Condition] = ()
    _at: dict[str, int] = field(init=False, repr=False, compare=False)
    _matches: Predicate | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_at", {name: i for i, name in enumerate(self.selected)})
        object.__setattr__(self, "_matches", all_of(self.conditions))

    def record(self, row: Sequence[Any]) -> Record:
        at = self._at
        change = _finite_change(row[at[self.change_column]])
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
            return Record(key_bytes, None, change, RowKind.NOT_FINITE, column, value[column])
        return Record(key_bytes, to_json(value), change, RowKind.LIVE)
