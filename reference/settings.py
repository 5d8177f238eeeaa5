"""Settings of the reference publisher, read from `ENRICH_*` variables like the dataflow's.

The publisher publishes for one lookup of `ENRICH_LOOKUPS` (`ENRICH_PUBLISH_LOOKUP`,
by default the first) and takes its topic and version field from there, so the
two programs cannot disagree about where rows go and how their version is named.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from config.connections import KafkaConnection, LoggingSettings, OracleConnection
from config.lookups import DEMO_LOOKUPS, Lookup, LookupSettings
from operators.filters import Condition
from reference.query import Database, check_column, check_table

_SECURITY = DEMO_LOOKUPS[0]
"""The dataflow's first default lookup: what the publisher's defaults publish, so they compose."""


class ReferenceTableSettings(OracleConnection):
    """Where the reference table is and which of its columns mean what.

    Apart from the publisher's, so the demo table can be written without Kafka settings.
    """

    publish_database: Database = "sqlite"
    publish_sqlite_path: Path = Path("demo-output/reference.sqlite")
    publish_table: str = "securities"
    publish_key_column: str = _SECURITY.key_field
    publish_columns: tuple[str, ...] = tuple(_SECURITY.columns)
    publish_change_column: str = "updated_at"
    publish_soft_delete_column: str | None = None
    publish_filter: tuple[Condition, ...] = ()

    @field_validator("publish_table")
    @classmethod
    def _table_is_identifier(cls, value: str) -> str:
        return check_table(value)

    @field_validator("publish_key_column", "publish_change_column", "publish_soft_delete_column")
    @classmethod
    def _column_is_identifier(cls, value: str | None) -> str | None:
        return value if value is None else check_column(value)

    @field_validator("publish_columns")
    @classmethod
    def _columns_are_identifiers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one column to publish is needed")
        if len(set(value)) < len(value):
            raise ValueError(f"{list(value)} names a column twice")
        for name in value:
            check_column(name)
        return value

    @field_validator("publish_filter")
    @classmethod
    def _filter_fields_are_identifiers(cls, value: tuple[Condition, ...]) -> tuple[Condition, ...]:
        for condition in value:
            check_column(condition.field)
        return value

    @model_validator(mode="after")
    def _oracle_has_credentials(self) -> ReferenceTableSettings:
        if self.publish_database == "oracle":
            self.require_oracle("publish_database is oracle")
        return self

    def selected_columns(self, published: bool = True) -> tuple[str, ...]:
        """Every column a load reads, each once: key, published, filtered on, change, deleted.

        Without the published ones: what decides whether a row is live, all the
        mass-delete guard's count needs.
        """
        names = [
            self.publish_key_column,
            *(self.publish_columns if published else ()),
            *(condition.field for condition in self.publish_filter),
            self.publish_change_column,
        ]
        if self.publish_soft_delete_column is not None:
            names.append(self.publish_soft_delete_column)
        return tuple(dict.fromkeys(names))


class PublisherSettings(ReferenceTableSettings, KafkaConnection, LoggingSettings, LookupSettings):
    """Validated settings of `enrich publish`; see the README's settings table."""

    publish_lookup: str | None = None
    """The lookup of ENRICH_LOOKUPS whose topic and version field are written; None: the first."""
    publish_state_path: Path = Path("demo-output/reference-publisher.state.json")
    publish_batch_size: int = Field(10_000, gt=0)
    publish_interval_seconds: float | None = Field(None, gt=0)
    publish_max_delete_share: float = Field(0.10, ge=0, le=1)
    """The share of the topic's live keys one full load may tombstone (reference.guard)."""
    publish_allow_mass_delete: bool = False

    @model_validator(mode="after")
    def _publishable(self) -> PublisherSettings:
        if not self.kafka_brokers:
            raise ValueError("kafka_brokers: the publisher writes to Kafka, so a broker is needed")
        lookup = self.lookup
        if lookup.topic is None:
            raise ValueError(
                f"publish_lookup: lookup {lookup.name!r} of ENRICH_LOOKUPS names no topic "
                'to publish to; give it a "topic"'
            )
        if lookup.version_field in self.publish_columns:
            raise ValueError(
                f"publish_columns: {lookup.version_field!r} is the version field of lookup "
                f"{lookup.name!r}; the version needs a field of its own"
            )
        field = lookup.valid_from_field
        if (
            lookup.mode == "as_of"
            and lookup.valid_from == "field"
            and field not in (self.publish_columns)
        ):
            raise ValueError(
                f"publish_columns: lookup {lookup.name!r} is as_of and reads each row's "
                f"validity time from {field!r}, which is not published; add it"
            )
        return self

    @property
    def lookup(self) -> Lookup:
        """The lookup published for: the named one, else the first."""
        if self.publish_lookup is None:
            return self.lookups[0]
        found = self.named(self.publish_lookup)
        if found is None:
            names = [lookup.name for lookup in self.lookups]
            raise ValueError(
                f"publish_lookup: no lookup {self.publish_lookup!r} in ENRICH_LOOKUPS; "
                f"the lookups are {names}"
            )
        return found

    @property
    def reference_topic(self) -> str:
        """The topic written: the lookup's."""
        return self.lookup.topic or ""

    @property
    def version_field(self) -> str:
        """The field of each value that holds the version: the lookup's."""
        return self.lookup.version_field
