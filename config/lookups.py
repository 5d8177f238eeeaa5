"""The lookup chain: which reference rows join on which event field, shared by every program."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from config.base import EnrichSettings, check_topic
from operators.decode import Invalid, ReferenceSchema, column_values
from operators.enrichment import Clock, JoinType, LookupMode, MissPolicy
from operators.filters import Condition, all_of, check_fields
from operators.identifiers import check_identifier
from operators.records import FieldType, ValidFrom

__all__ = [
    "DEMO_LOOKUPS",
    "Clock",
    "JoinType",
    "Lookup",
    "LookupMode",
    "LookupSettings",
    "MissPolicy",
    "ValidFrom",
    "check_columns",
]


def check_columns(names: dict[str, Any]) -> dict[str, Any]:
    """The names, each checked as a column name."""
    for name in names:
        check_identifier(name, "column name")
    return names


class Lookup(BaseModel):
    """One stage of the enrichment chain: which reference rows join on which event field.

    `key_field` may be a column an earlier lookup added (with that lookup's
    prefix). Only `columns` are kept from a reference row, so nothing else is
    ever held in state. A row that fails `filter` acts as a delete. Join type,
    miss policy and timeout fall back to the dataflow-wide settings when unset.
    The reference rows come from `file` if set, else from `topic` (Kafka
    source) or `demo_table` (demo source).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    key_field: str
    columns: dict[str, FieldType]
    prefix: str = ""
    version_field: str = "version"
    filter: list[Condition] = []
    join_type: JoinType | None = None
    miss_policy: MissPolicy | None = None
    miss_timeout_seconds: float | None = Field(None, gt=0)
    miss_defaults: dict[str, Any] = {}
    timeout_clock: Clock | None = None
    """What the miss timeout runs on: `processing` (the system clock) or `event` (the
    events' watermark); the dataflow-wide `ENRICH_TIMEOUT_CLOCK` when unset."""
    mode: LookupMode = "latest"
    """`latest` joins the newest row; `as_of` the version valid at the event's time."""
    valid_from: ValidFrom = "version"
    """An as-of lookup's validity time of a row: its `version` read as a time, the
    `field` named by `valid_from_field`, or the record's own time (`record_time`, a
    Kafka record's timestamp)."""
    valid_from_field: str | None = None
    history_seconds: float = Field(7 * 86_400.0, gt=0)
    """An as-of lookup keeps the versions valid within this long before a key's newest one."""
    history_versions: int = Field(16, gt=0, le=10_000)
    """And at most this many versions per key, the newest."""
    row_ttl_seconds: float | None = Field(None, gt=0)
    """A key whose row is not refreshed within this long (on the timeout's clock) is dropped."""
    topic: str | None = None
    file: Path | None = None
    demo_table: Literal["securities", "exchanges"] | None = None

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        return check_identifier(value, "lookup name")

    @field_validator("columns")
    @classmethod
    def _columns_are_identifiers(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("at least one column is needed")
        return value

    @field_validator("miss_defaults")
    @classmethod
    def _defaults_hold_as_rows_do(
        cls, value: dict[str, Any], info: ValidationInfo
    ) -> dict[str, Any]:
        """Defaults reach the table undecoded: held to decode's rules for a reference row,
        coerced as it coerces, so a bad one stops start-up instead of failing row by row."""
        columns = info.data.get("columns")
        if not columns:
            return value  # the columns were refused already
        try:
            valid = column_values(columns, value)
        except Invalid as exc:
            raise ValueError(
                f"lookup {info.data.get('name')!r}, column {exc.detail} "
                "(a reference row with this value would be dead-lettered at decode)"
            ) from None
        return {**value, **valid}

    @field_validator("topic")
    @classmethod
    def _topic_is_legal(cls, value: str | None) -> str | None:
        return check_topic(value)

    @model_validator(mode="after")
    def _defaults_are_columns(self) -> Lookup:
        check_columns(dict.fromkeys(self.stored_columns()))
        check_fields(
            self.filter,
            {*self.columns, self.version_field},
            f"columns and version_field of lookup {self.name!r}",
            "To filter on another field of the rows, add it to the columns.",
        )
        unknown = set(self.miss_defaults) - set(self.columns)
        if unknown:
            raise ValueError(f"miss_defaults {sorted(unknown)} are not columns of {self.name!r}")
        if (self.valid_from == "field") != (self.valid_from_field is not None):
            raise ValueError(
                f"lookup {self.name!r}: valid_from_field names the field a row's validity time "
                'is read from: give it exactly when valid_from is "field"'
            )
        if self.valid_from_field is not None:
            check_identifier(self.valid_from_field, "valid_from_field")
        return self

    def reference_schema(self, publisher: bool = False) -> ReferenceSchema:
        """How the dataflow decodes this lookup's reference records: one definition.

        The publisher holds back what this refuses (`reference.reader`), without
        the filter, which decides deletes in the dataflow, and without a
        `record_time` validity: a row has no record time before it is produced.
        """
        valid_from = self.valid_from if self.mode == "as_of" else None
        if publisher and valid_from == "record_time":
            valid_from = None
        return ReferenceSchema(
            self.columns,
            self.version_field,
            None if publisher else all_of(self.filter),
            valid_from,
            self.valid_from_field,
        )

    def stored_columns(self) -> dict[str, FieldType]:
        """The columns as the event and the table get them: prefixed, in row order."""
        return {f"{self.prefix}{name}": kind for name, kind in self.columns.items()}

    def defaults_row(self) -> tuple[Any, ...]:
        """The reference values a miss gets under the `defaults` policy."""
        return tuple(self.miss_defaults.get(name) for name in self.columns)


DEMO_LOOKUPS = [
    Lookup(
        name="security",
        key_field="security_id",
        columns={"cusip": "str", "name": "str", "sector": "str", "exchange_id": "str"},
        topic="reference",
        demo_table="securities",
    ),
    Lookup(
        name="exchange",
        key_field="exchange_id",
        columns={"name": "str", "country": "str"},
        prefix="exchange_",
        topic="exchanges",
        demo_table="exchanges",
    ),
]
"""Quotes get their security, then the security's exchange: the demo's two-stage chain."""


class LookupSettings(EnrichSettings):
    """`ENRICH_LOOKUPS`: the chain the dataflow joins, and where the publisher writes each table."""

    lookups: list[Lookup] = DEMO_LOOKUPS

    def named(self, name: str) -> Lookup | None:
        """The lookup called `name`, if there is one."""
        return next((lookup for lookup in self.lookups if lookup.name == name), None)
