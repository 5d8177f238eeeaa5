"""The dataflow's own settings, read from `ENRICH_*` environment variables.

What every program shares (connections, logging, lookups, how settings are
read and refused) lives on the ground floor, `config/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from pydantic import Field, field_validator, model_validator

from config.base import EnrichSettings, SettingsError, check_topic
from config.base import load_settings as load_any
from config.connections import KafkaConnection, LoggingSettings, OracleConnection
from config.lookups import Clock, JoinType, Lookup, LookupSettings, MissPolicy, check_columns
from operators.filters import Condition, check_fields
from operators.identifiers import check_identifier
from operators.records import FieldType
from reference.settings import PublisherSettings
from sinks.table import check_table_name


class Settings(KafkaConnection, OracleConnection, LoggingSettings, LookupSettings):
    """Validated settings of the dataflow; see the README's settings table for each one."""

    source: Literal["demo", "kafka"] = "demo"

    kafka_events_topic: str = "events"
    kafka_events_start: Literal["earliest", "latest"] = "earliest"
    kafka_batch_size: int = Field(5_000, gt=0)
    kafka_stop_at_end: bool = False
    kafka_commit_group: str | None = Field(None, min_length=1, max_length=249)
    kafka_start_timeout_seconds: float = Field(30.0, gt=0, le=600)
    kafka_offset_reset_policy: Literal["fail", "earliest", "latest"] = "fail"
    kafka_metadata_check_seconds: float = Field(10.0, gt=0)
    kafka_quiet_warning_seconds: float = Field(30.0, gt=0)
    dead_letter_topic: str | None = None
    enriched_topic: str | None = None

    database: Literal["sqlite", "oracle"] = "sqlite"
    allow_demo_into_oracle: bool = False

    event_id_field: str = "event_id"
    event_time_field: str = "ts"
    event_fields: dict[str, FieldType] = {"price": "float", "size": "int"}
    event_filter: list[Condition] = []
    max_record_bytes: int = Field(65_536, gt=0)

    join_type: JoinType = "left"
    miss_policy: MissPolicy = "defaults"
    miss_timeout_seconds: float = Field(5.0, gt=0)
    timeout_clock: Clock | None = None
    """Unset: `event` for the demo, whose output is then a function of its plan
    however a run is interrupted; `processing` for Kafka, where a live stream
    wants a miss to wait a bounded time on the wall clock."""
    event_time_lateness_seconds: float = Field(0.0, ge=0)
    event_time_idle_seconds: float = Field(30.0, gt=0)
    max_pending_per_key: int = Field(1_000, gt=0)
    max_pending_per_shard: int = Field(100_000, gt=0)
    max_pending_mb: float = Field(256.0, gt=0)
    """Memory budget of all waiting events, split evenly over lookups and shards."""
    shards: int = Field(64, gt=0, le=4096)

    sqlite_path: Path = Path("demo-output/enriched.sqlite")
    table: str = "enriched_events"
    sink_partitions: int = Field(4, gt=0, le=1024)
    sink_batch_size: int = Field(5_000, gt=0)
    sink_lookup_index: bool = False
    """Whether a table the sink creates gets an index on lookup_id (docs/BENCHMARKS.md)."""
    dead_letter_path: Path = Path("demo-output/dead_letters.jsonl")
    dead_letter_table: str = "enrich_dead_letters"
    sink_retry_initial_seconds: float = Field(0.1, gt=0)
    sink_retry_max_seconds: float = Field(30.0, gt=0)
    sink_breaker_failures: int = Field(5, gt=0)
    sink_breaker_reset_seconds: float = Field(30.0, gt=0)
    oracle_pool_min: int = Field(1, ge=0)
    oracle_pool_max: int | None = Field(None, gt=0)
    oracle_pool_timeout_seconds: float = Field(10.0, gt=0)

    demo_events: int = Field(200_000, ge=0)
    demo_references: int = Field(10_000, gt=0)
    demo_seed: int = 42
    demo_partitions: int = Field(4, gt=0, le=256)
    demo_batch_size: int = Field(1_000, gt=0)
    demo_rate: float = Field(0.0, ge=0)

    gc_gen0_threshold: int = Field(100_000, ge=0)
    recovery_trusted_group: int | None = Field(None, ge=0)
    metrics_port_in_use: Literal["refuse", "warn"] = "refuse"

    @field_validator("event_fields")
    @classmethod
    def _columns_are_identifiers(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_columns(value)

    @field_validator("kafka_events_topic", "dead_letter_topic", "enriched_topic")
    @classmethod
    def _topic_is_legal(cls, value: str | None) -> str | None:
        return check_topic(value)

    @field_validator("table")
    @classmethod
    def _table_is_identifier(cls, value: str) -> str:
        return check_table_name(value)

    @field_validator("dead_letter_table")
    @classmethod
    def _dead_letter_table_is_identifier(cls, value: str) -> str:
        return check_identifier(value, "dead-letter table name")

    @model_validator(mode="after")
    def _sink_consistent(self) -> Settings:
        if self.dead_letter_table.lower() == self.table.lower():
            raise ValueError("dead_letter_table: must differ from table")
        if self.sink_retry_initial_seconds > self.sink_retry_max_seconds:
            raise ValueError("sink_retry_initial_seconds: must not exceed sink_retry_max_seconds")
        if self.oracle_pool_min > (self.oracle_pool_max or self.sink_partitions):
            raise ValueError(
                "oracle_pool_min: must not exceed oracle_pool_max (default: sink_partitions)"
            )
        if self.database == "oracle" and self.sink_batch_size > 65_535:
            raise ValueError(
                "sink_batch_size: at most 65535 with Oracle, which reports batch errors "
                "for no more rows of one batch"
            )
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        own_columns = {self.lookup_field, self.event_id_field, self.event_time_field}
        if own_columns & set(self.event_fields):
            raise ValueError(
                f"event_fields: {sorted(own_columns & set(self.event_fields))} already have "
                "their own columns (lookup id, event id, event time)"
            )
        self._check_chain()
        declared = {*own_columns, *self.event_fields}
        try:
            check_fields(
                self.event_filter,
                declared,
                "declared event fields",
                "To filter on another field, declare it in ENRICH_EVENT_FIELDS.",
            )
        except ValueError as exc:
            raise ValueError(f"event_filter: {exc}") from None
        kafka_outputs = self.dead_letter_topic or self.enriched_topic
        if (self.source == "kafka" or kafka_outputs) and not self.kafka_brokers:
            raise ValueError("kafka_brokers: Kafka is used, so at least one broker is needed")
        if "group.id" in self.kafka_config:
            # Read last, it would override the commit group, or name one nothing commits to.
            raise ValueError(
                "kafka_config: 'group.id' is not taken here; the dataflow joins no group "
                "(offsets live in the recovery store): set ENRICH_KAFKA_COMMIT_GROUP to have "
                "lag tools see its progress"
            )
        if self.database == "oracle":
            self.require_oracle("database is oracle")
        return self

    def _check_chain(self) -> None:
        """Every lookup's key must exist by the time the event reaches it, and its
        source must exist for the configured source."""
        if not self.lookups:
            raise ValueError("lookups: at least one lookup is needed")
        available = {self.lookup_field, *self.event_fields}
        names: set[str] = set()
        stored = {name.lower() for name in (*available, self.event_id_field, self.event_time_field)}
        topics = {self.kafka_events_topic}
        demo_tables: set[str] = set()
        for index, lookup in enumerate(self.lookups):
            where = f"lookups: lookup {index} ({lookup.name!r})"
            if lookup.name in names:
                raise ValueError(f"{where}: the name is used twice")
            names.add(lookup.name)
            if lookup.key_field not in available:
                raise ValueError(
                    f"{where}: key_field {lookup.key_field!r} is produced neither by the "
                    "events (ENRICH_EVENT_FIELDS) nor by an earlier lookup; "
                    f"available: {sorted(available)}"
                )
            for column in lookup.stored_columns():
                if column.lower() in stored:
                    raise ValueError(
                        f"{where}: column {column!r} is already an event field or a column of an "
                        "earlier lookup; give this lookup a prefix"
                    )
                stored.add(column.lower())
            available.update(lookup.stored_columns())
            if lookup.file is not None:
                continue
            if self.source == "kafka":
                if lookup.topic is None:
                    raise ValueError(f"{where}: the source is kafka, so it needs a topic or file")
                if lookup.topic in topics:
                    raise ValueError(f"{where}: topic {lookup.topic!r} is already read")
                topics.add(lookup.topic)
            elif lookup.demo_table is None:
                raise ValueError(f"{where}: the source is demo, so it needs a demo_table or file")
            elif lookup.demo_table in demo_tables:
                raise ValueError(f"{where}: demo_table {lookup.demo_table!r} is already read")
            else:
                demo_tables.add(lookup.demo_table)
        if self.source == "demo" and "securities" not in demo_tables:
            raise ValueError(
                "lookups: the demo's events carry security ids and its securities come with "
                'them, so one lookup needs "demo_table": "securities" (without a file); '
                "to enrich from files only, use ENRICH_SOURCE=kafka for the events"
            )

    def clock_of(self, lookup: Lookup) -> Clock:
        """What the miss timeout of `lookup` runs on (`timeout_clock`)."""
        if lookup.timeout_clock is not None:
            return lookup.timeout_clock
        if self.timeout_clock is not None:
            return self.timeout_clock
        return "event" if self.source == "demo" else "processing"

    @property
    def lookup_field(self) -> str:
        """The event field every event must have: the first lookup's key."""
        return self.lookups[0].key_field if self.lookups else ""

    def reference_columns(self) -> dict[str, FieldType]:
        """Every lookup's stored columns, in chain order: what the table adds to an event."""
        return {
            name: kind for lookup in self.lookups for name, kind in lookup.stored_columns().items()
        }


PROGRAM_SETTINGS: tuple[type[EnrichSettings], ...] = (Settings, PublisherSettings)
"""The settings of every program of the project, with every class they inherit from: the
dataflow's and the reference publisher's (the commands read these two). One ConfigMap
serves them all, so an `ENRICH_*` variable none of them reads is a typo."""

S = TypeVar("S", bound=EnrichSettings)


@overload
def load_settings(**overrides: Any) -> Settings: ...
@overload
def load_settings(cls: type[S], **overrides: Any) -> S: ...
def load_settings(cls: type[EnrichSettings] = Settings, **overrides: Any) -> EnrichSettings:
    """The dataflow's settings (or `cls`'s), or SettingsError naming every bad variable,
    among them any `ENRICH_*` variable no program reads; every program loads through here."""
    return load_any(cls, PROGRAM_SETTINGS, **overrides)


def check_dataflow(settings: Settings) -> None:
    """What only the dataflow refuses: the demo's synthetic rows in an Oracle table, unless asked.

    A pod whose ENRICH_SOURCE went missing would otherwise fill production tables with
    made-up rows; the other programs read the same settings without writing them.
    """
    demo_into_oracle = settings.source == "demo" and settings.database == "oracle"
    if demo_into_oracle and not settings.allow_demo_into_oracle:
        raise SettingsError(
            "invalid settings:\n  ENRICH_SOURCE: the source is the demo (the default when "
            "unset) and ENRICH_DATABASE is oracle, so synthetic rows would be written to "
            "Oracle; set ENRICH_SOURCE=kafka, or ENRICH_ALLOW_DEMO_INTO_ORACLE=true if meant"
        )
