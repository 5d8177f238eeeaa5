"""The shape of the enriched table, independent of any database.

Identifiers are checked here, once, because dialects quote them into SQL;
values only ever travel as bind parameters. Types are logical (`FieldType`
plus `json`) so each dialect picks its own physical types.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from operators.records import Enriched, FieldType, Outcome

ColumnType = FieldType | Literal["json"]
"""A column's logical type; `json` is text that may outgrow a short string type."""

KEY_COLUMN = "event_id"
"""The primary key: upserting on it makes every replay overwrite, never duplicate."""

_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,29}$")


class Column(NamedTuple):
    """One column as a dialect needs it to write DDL."""

    name: str
    type: ColumnType
    nullable: bool


_LEADING: tuple[Column, ...] = (
    Column(KEY_COLUMN, "str", False),
    Column("lookup_id", "str", False),
    Column("event_time", "float", True),
    Column("status", "str", False),
    Column("miss_reason", "str", True),
    Column("waited_ms", "float", False),
    Column("ref_version", "float", True),
)
_STAGES = Column("stages", "json", False)
_ATTRIBUTES = Column("attributes", "json", True)


def _check_identifier(name: str, what: str) -> None:
    if not _IDENTIFIER.match(name):
        raise ValueError(
            f"{what} {name!r} is not a valid identifier (letters, digits, underscore; "
            "starts with a letter; at most 30 characters)"
        )


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
    _schema: tuple[Column, ...] = field(init=False, repr=False, compare=False)
    _event_names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _not_attributes: frozenset[str] = field(init=False, repr=False, compare=False)
    _no_reference: tuple[None, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_identifier(self.name, "table name")
        declared = (
            *(Column(name, kind, True) for name, kind in self.event_columns),
            *(Column(name, kind, True) for name, kind in self.reference_columns),
        )
        # SQLite, and Oracle for unquoted names, ignore case: so must the collision check.
        taken = {column.name.lower() for column in (*_LEADING, _STAGES, _ATTRIBUTES)}
        for column in declared:
            _check_identifier(column.name, "column name")
            if column.name.lower() in taken:
                raise ValueError(
                    f"column name {column.name!r} is used twice or collides with a fixed column"
                )
            taken.add(column.name.lower())
        event_names = tuple(name for name, _ in self.event_columns)
        reference_names = {name for name, _ in self.reference_columns}
        object.__setattr__(self, "_schema", (*_LEADING, *declared, _STAGES, _ATTRIBUTES))
        object.__setattr__(self, "_event_names", event_names)
        object.__setattr__(
            self, "_not_attributes", self.unstored_fields | set(event_names) | reference_names
        )
        object.__setattr__(self, "_no_reference", (None,) * len(self.reference_columns))

    def schema(self) -> tuple[Column, ...]:
        """Every column in order, with its logical type, for a dialect's DDL."""
        return self._schema

    def columns(self) -> tuple[str, ...]:
        """Every column name, in the order of `params`."""
        return tuple(column.name for column in self._schema)

    def params(self, rec: Enriched) -> tuple[Any, ...]:
        """Bind values for one row, as plain Python types any driver accepts.

        `rec.row` ends with the row's version, stored apart as `ref_version`,
        so only its leading values belong to the reference columns.
        """
        event = rec.event
        fields = event.fields
        extra = {k: v for k, v in fields.items() if k not in self._not_attributes}
        reference = self._no_reference if rec.row is None else rec.row[: len(self._no_reference)]
        return (
            event.event_id,
            event.lookup_id,
            event.event_time,
            rec.status.value,
            None if rec.miss_reason is None else rec.miss_reason.value,
            rec.waited_ms,
            rec.version,
            *(fields.get(name) for name in self._event_names),
            *reference,
            json.dumps([_stage(outcome) for outcome in event.stages], separators=(",", ":")),
            json.dumps(extra, sort_keys=True, separators=(",", ":")) if extra else None,
        )


def _stage(outcome: Outcome) -> dict[str, Any]:
    return {
        "lookup": outcome.lookup,
        "status": outcome.status.value,
        "miss_reason": None if outcome.miss_reason is None else outcome.miss_reason.value,
        "waited_ms": outcome.waited_ms,
        "version": outcome.version,
    }
