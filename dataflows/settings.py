"""Every knob of the dataflow, read from `ENRICH_*` environment variables.

An optional dotenv file named by `ENRICH_ENV_FILE` is read first; real
environment variables override it. A bad value stops start-up with a message
that names the environment variable, not a Python field name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from operators.filters import Condition
from operators.records import FieldType

JoinType = Literal["left", "inner"]
MissPolicy = Literal["defaults", "dead_letter", "pass_through"]

ENV_PREFIX = "ENRICH_"
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,29}$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class SettingsError(ValueError):
    """Start-up refused because of a bad setting; the message names it."""


def check_topic(value: str | None) -> str | None:
    """A topic name Kafka accepts, or None; shared by every program that names topics."""
    if value is not None and not _TOPIC.match(value):
        raise ValueError(
            f"{value!r} is not a legal Kafka topic name "
            "(letters, digits, '.', '_', '-'; at most 249 characters)"
        )
    return value


def _check_identifiers(names: dict[str, Any]) -> dict[str, Any]:
    for name in names:
        if not _IDENTIFIER.match(name):
            raise ValueError(
                f"{name!r} is not a valid column name (letters, digits, underscore; "
                "starts with a letter; at most 30 characters)"
            )
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
    topic: str | None = None
    file: Path | None = None
    demo_table: Literal["securities", "exchanges"] | None = None

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        _check_identifiers({value: None})
        return value

    @field_validator("columns")
    @classmethod
    def _columns_are_identifiers(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("at least one column is needed")
        return value

    @field_validator("topic")
    @classmethod
    def _topic_is_legal(cls, value: str | None) -> str | None:
        return check_topic(value)

    @model_validator(mode="after")
    def _defaults_are_columns(self) -> Lookup:
        _check_identifiers(dict.fromkeys(self.stored_columns()))
        unknown = set(self.miss_defaults) - set(self.columns)
        if unknown:
            raise ValueError(f"miss_defaults {sorted(unknown)} are not columns of {self.name!r}")
        return self

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


class _EnrichSettings(BaseSettings):
    """Every program of the product reads `ENRICH_*` variables the same way."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)


class LoggingSettings(_EnrichSettings):
    """How a program of the product logs and how often it reports progress."""

    progress_seconds: float = Field(2.0, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"


class KafkaConnection(_EnrichSettings):
    """How to reach Kafka; shared by the dataflow and the reference publisher."""

    kafka_brokers: Annotated[list[str], NoDecode] = []
    kafka_config: dict[str, SecretStr] = {}
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None

    @field_validator("kafka_brokers", mode="before")
    @classmethod
    def _split_brokers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [broker.strip() for broker in value.split(",") if broker.strip()]
        return value

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka properties for every client; holds secrets, so never log it."""
        config = {name: value.get_secret_value() for name, value in self.kafka_config.items()}
        if self.kafka_sasl_username is not None:
            config["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password is not None:
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        return config


class OracleConnection(_EnrichSettings):
    """How to reach Oracle; shared by the sink and the reference publisher.

    Thin mode needs no Oracle client; thick mode loads Oracle Instant Client
    (from `oracle_client_lib_dir`, or the system library path).
    """

    oracle_user: str | None = None
    oracle_password: SecretStr | None = None
    oracle_dsn: str | None = None
    oracle_thick_mode: bool = False
    oracle_client_lib_dir: Path | None = None

    def require_oracle(self, because: str) -> None:
        """Refuse start-up, naming every missing setting, when Oracle is used."""
        missing = [
            name
            for name in ("oracle_user", "oracle_password", "oracle_dsn")
            if getattr(self, name) is None
        ]
        if missing:
            raise ValueError(f"{missing[0]}: {because}, so {', '.join(missing)} must be set")


class Settings(KafkaConnection, OracleConnection, LoggingSettings):
    """Validated settings of the dataflow; see the README's settings table for each one."""

    source: Literal["demo", "kafka"] = "demo"

    kafka_events_topic: str = "events"
    kafka_events_start: Literal["earliest", "latest"] = "earliest"
    kafka_batch_size: int = Field(5_000, gt=0)
    kafka_stop_at_end: bool = False
    dead_letter_topic: str | None = None
    enriched_topic: str | None = None

    database: Literal["sqlite", "oracle"] = "sqlite"

    event_id_field: str = "event_id"
    event_time_field: str = "ts"
    event_fields: dict[str, FieldType] = {"price": "float", "size": "int"}
    event_filter: list[Condition] = []
    max_record_bytes: int = Field(65_536, gt=0)

    lookups: list[Lookup] = DEMO_LOOKUPS
    join_type: JoinType = "left"
    miss_policy: MissPolicy = "defaults"
    miss_timeout_seconds: float = Field(5.0, gt=0)
    max_pending_per_key: int = Field(1_000, gt=0)
    max_pending_per_shard: int = Field(100_000, gt=0)
    max_pending_mb: float = Field(256.0, gt=0)
    """Memory budget of all waiting events, split evenly over lookups and shards."""
    shards: int = Field(64, gt=0, le=4096)

    sqlite_path: Path = Path("demo-output/enriched.sqlite")
    table: str = "enriched_events"
    sink_partitions: int = Field(4, gt=0, le=1024)
    sink_batch_size: int = Field(5_000, gt=0)
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

    @field_validator("event_fields")
    @classmethod
    def _columns_are_identifiers(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_identifiers(value)

    @field_validator("kafka_events_topic", "dead_letter_topic", "enriched_topic")
    @classmethod
    def _topic_is_legal(cls, value: str | None) -> str | None:
        return check_topic(value)

    @field_validator("table")
    @classmethod
    def _table_is_identifier(cls, value: str) -> str:
        _check_identifiers({value: None})
        return value

    @field_validator("dead_letter_table")
    @classmethod
    def _dead_letter_table_is_identifier(cls, value: str) -> str:
        _check_identifiers({value: None})
        return value

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
        kafka_outputs = self.dead_letter_topic or self.enriched_topic
        if (self.source == "kafka" or kafka_outputs) and not self.kafka_brokers:
            raise ValueError("kafka_brokers: Kafka is used, so at least one broker is needed")
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

    @property
    def lookup_field(self) -> str:
        """The event field every event must have: the first lookup's key."""
        return self.lookups[0].key_field if self.lookups else ""

    def reference_columns(self) -> dict[str, FieldType]:
        """Every lookup's stored columns, in chain order: what the table adds to an event."""
        return {
            name: kind for lookup in self.lookups for name, kind in lookup.stored_columns().items()
        }


def _named(loc: tuple[Any, ...], message: str) -> str:
    """`ENV_VAR: message`; a check across fields starts its message with the field's name."""
    if loc:
        return f"{ENV_PREFIX}{str(loc[0]).upper()}: {message}"
    field, _, rest = message.partition(":")
    return f"{ENV_PREFIX}{field.strip().upper()}: {rest.strip()}"


S = TypeVar("S", bound=_EnrichSettings)


def load_settings(cls: type[S] = Settings, **overrides: Any) -> S:  # type: ignore[assignment]
    """Read settings, or raise SettingsError naming every bad variable."""
    env_file = os.environ.get(f"{ENV_PREFIX}ENV_FILE")
    try:
        return cls(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {_named(err['loc'], message)}")
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None
