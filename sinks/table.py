"""The shapes of the tables the sink writes, independent of any database.

Identifiers are checked here, once, because dialects quote them into SQL;
values only ever travel as bind parameters. Types are logical (`FieldType`
plus `json` and `timestamp`) so each dialect picks its own physical types.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

from operators.identifiers import check_identifier
from operators.limits import MAX_TEXT
from operators.records import FieldType
from operators.sink_rows import EVENT_ID, LEADING, LOOKUP_ID, TRAILING, RowShape, SinkRow

ColumnType = FieldType | Literal["number", "json", "timestamp"]
"""A column's logical type. `number` is exact, integer or not: a version may be a
64-bit integer (an SCN) or fractional epoch seconds, and must read back as it was
bound; `json` is text that may outgrow a short string type; `timestamp` is set by
the database when the row is first written, never bound."""

KEY_COLUMN = "event_id"
"""The primary key: upserting on it makes every replay overwrite, never duplicate."""

ORDER_COLUMN = "arrival_seq"
"""The event's arrival number (`operators.arrival`): a row is overwritten only by a copy
that arrived no earlier, whichever reached the sink first."""

INDEXED = ("lookup_id",)
"""The enriched table's columns with an index of their own, besides the key."""


def index_name(table: str, column: str) -> str:
    """The name of the index on `column`; an identifier too, so it bounds the table's name."""
    return f"{table}_{column}"


def check_table_name(name: str) -> str:
    """The enriched table's name, if it and its index names are identifiers."""
    check_identifier(name, "table name")
    for column in INDEXED:
        check_identifier(index_name(name, column), "index name (the table name, '_', a column)")
    return name


class Column(NamedTuple):
    """One column as a dialect needs it to write DDL."""

    name: str
    type: ColumnType
    nullable: bool


_FIXED: dict[str, tuple[ColumnType, bool]] = {
    KEY_COLUMN: ("str", False),
    "lookup_id": ("str", False),
    "event_time": ("float", True),
    "status": ("str", False),
    "miss_reason": ("str", True),
    "waited_ms": ("float", False),
    "ref_version": ("number", True),
    ORDER_COLUMN: ("int", False),
    "stages": ("json", False),
    "attributes": ("json", True),
}
"""The fixed columns' types; their order is the sink row's (`operators.sink_rows`)."""
_LEADING = tuple(Column(name, *_FIXED[name]) for name in LEADING)
_STAGES, _ATTRIBUTES = (Column(name, *_FIXED[name]) for name in TRAILING)


class Table(Protocol):
    """What a dialect needs to create a table and upsert into it; hashable, as its SQL is cached."""

    def __hash__(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def key(self) -> str:
        """The primary key column: the upsert overwrites the row with the same key."""
        ...

    def schema(self) -> tuple[Column, ...]:
        """Every column in order; all but `timestamp` ones are bound, in this order."""
        ...

    def indexed(self) -> tuple[str, ...]:
        """Columns that get an index of their own, for lookups besides the key."""
        ...

    @property
    def order(self) -> str | None:
        """The column an overwrite must not lower (`sinks.sql.overwrite_condition`); None: any."""
        ...


@dataclass(frozen=True)
class EnrichedTable:
    """Where enriched events are stored, and how one becomes a row.

    Declared event fields and projected reference columns get their own
    columns; every other event field goes into `attributes` as JSON so nothing
    the producer sent is lost. `stages` holds each lookup's outcome as JSON.
    `unstored_fields` names the event fields that already have a fixed column
    (lookup id, event id, event time).
    """

    name: str
    event_columns: tuple[tuple[str, FieldType], ...]
    reference_columns: tuple[tuple[str, FieldType], ...]
    unstored_fields: frozenset[str]
    keep_fields: bool = False
    """Whether sink rows keep the event's whole document (for the enriched topic)."""
    lookup_index: bool = False
    """Whether a table it creates gets an index on `lookup_id`: for readers that look rows
    up by it; the sink never does, and each row costs more to write with it."""
    _schema: tuple[Column, ...] = field(init=False, repr=False, compare=False)
    rows: RowShape = field(init=False, repr=False, compare=False)
    """Builds each event's sink row, in the order of `columns`."""

    def __post_init__(self) -> None:
        check_table_name(self.name)
        declared = (
            *(Column(name, kind, True) for name, kind in self.event_columns),
            *(Column(name, kind, True) for name, kind in self.reference_columns),
        )
        # SQLite, and Oracle for unquoted names, ignore case: so must the collision check.
        taken = {column.name.lower() for column in (*_LEADING, _STAGES, _ATTRIBUTES)}
        for column in declared:
            check_identifier(column.name, "column name")
            if column.name.lower() in taken:
                raise ValueError(
                    f"column name {column.name!r} is used twice or collides with a fixed column"
                )
            taken.add(column.name.lower())
        event_names = tuple(name for name, _ in self.event_columns)
        reference_names = tuple(name for name, _ in self.reference_columns)
        not_attributes = self.unstored_fields | set(event_names) | set(reference_names)
        rows = RowShape(event_names, reference_names, not_attributes, self.keep_fields)
        object.__setattr__(self, "_schema", (*_LEADING, *declared, _STAGES, _ATTRIBUTES))
        object.__setattr__(self, "rows", rows)
        if self.columns() != rows.columns():
            raise AssertionError("the schema and the sink row disagree on the column order")

    @property
    def key(self) -> str:
        return KEY_COLUMN

    def schema(self) -> tuple[Column, ...]:
        """Every column in order, with its logical type, for a dialect's DDL."""
        return self._schema

    def indexed(self) -> tuple[str, ...]:
        return INDEXED if self.lookup_index else ()

    @property
    def order(self) -> str:
        return ORDER_COLUMN

    def columns(self) -> tuple[str, ...]:
        """Every column name, in the order of `params`."""
        return tuple(column.name for column in self._schema)

    def params(self, row: SinkRow) -> tuple[Any, ...]:
        """Bind values for one row, as plain Python types any driver accepts."""
        return row.binds


DB_REJECTED = "db_rejected"
"""The dead-letter reason of a row the database refused."""

_DEAD_LETTER_SCHEMA: tuple[Column, ...] = (
    Column("origin", "str", False),
    Column("reason", "str", True),
    Column("code", "str", True),
    Column("detail", "str", True),
    Column("event_id", "str", True),
    Column("lookup_id", "str", True),
    Column("payload", "json", True),
    Column("dead_lettered_at", "timestamp", False),
)


@dataclass(frozen=True)
class DeadLetterTable:
    """Rows the database refused, written in the same transaction as the rows it took.

    Keyed by the event's origin, which is unique, so a replay overwrites its
    own dead letter. Every column but the key may be NULL because Oracle
    stores an empty string as NULL. Ids and the database's message are cut to
    `MAX_TEXT` so that a value too long for the enriched table cannot make
    its own dead letter fail too; `payload` keeps every value whole.
    """

    name: str = "enrich_dead_letters"

    def __post_init__(self) -> None:
        check_identifier(self.name, "dead-letter table name")

    @property
    def key(self) -> str:
        return "origin"

    def schema(self) -> tuple[Column, ...]:
        return _DEAD_LETTER_SCHEMA

    def indexed(self) -> tuple[str, ...]:
        return ()

    @property
    def order(self) -> None:
        return None

    def params(
        self, row: SinkRow, values: Mapping[str, Any], code: str, detail: str
    ) -> tuple[Any, ...]:
        """Bind values for the dead letter of `row`, which held `values`."""
        binds = row.binds
        return (
            row.origin,
            DB_REJECTED,
            code[:MAX_TEXT],
            detail[:MAX_TEXT],
            binds[EVENT_ID][:MAX_TEXT],
            binds[LOOKUP_ID][:MAX_TEXT],
            json.dumps(values, separators=(",", ":"), default=str),
        )
