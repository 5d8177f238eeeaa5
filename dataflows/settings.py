"""Every knob of the dataflow, read from `ENRICH_*` environment variables.

An optional dotenv file named by `ENRICH_ENV_FILE` is read first; real
environment variables override it. A bad value stops start-up with a message
that names the environment variable, not a Python field name.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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
from pydantic_settings import SettingsError as SourceError

from operators.filters import Condition, check_fields
from operators.identifiers import check_identifier
from operators.records import FieldType
from sinks.table import check_table_name

JoinType = Literal["left", "inner"]
MissPolicy = Literal["defaults", "dead_letter", "pass_through"]

ENV_PREFIX = "ENRICH_"
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}", re.ASCII)


class SettingsError(ValueError):
    """Start-up refused because of a bad setting; the message names it."""


def check_topic(value: str | None) -> str | None:
    """A topic name Kafka accepts, or None; shared by every program that names topics."""
    if value is not None and not _TOPIC.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a legal Kafka topic name "
            "(letters, digits, '.', '_', '-'; at most 249 characters)"
        )
    return value


def _check_identifiers(names: dict[str, Any]) -> dict[str, Any]:
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

    @field_validator("topic")
    @classmethod
    def _topic_is_legal(cls, value: str | None) -> str | None:
        return check_topic(value)

    @model_validator(mode="after")
    def _defaults_are_columns(self) -> Lookup:
        _check_identifiers(dict.fromkeys(self.stored_columns()))
        check_fields(
            self.filter,
            {*self.columns, self.version_field},
            f"columns and version_field of lookup {self.name!r}",
            "To filter on another field of the rows, add it to the columns.",
        )
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
    recovery_trusted_group: int | None = Field(None, ge=0)
    metrics_port_in_use: Literal["refuse", "warn"] = "refuse"

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
    """`ENV_VAR: message`, with the place inside a JSON setting (`[0].key_field`) when
    there is one; a check across fields starts its message with the field's name."""
    if loc:
        inside = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:])
        where = f"{inside.removeprefix('.')}: " if inside else ""
        return f"{ENV_PREFIX}{str(loc[0]).upper()}: {where}{message}"
    field, _, rest = message.partition(":")
    return f"{ENV_PREFIX}{field.strip().upper()}: {rest.strip()}"


_SOURCE_FIELD = re.compile(r'field "(?P<field>\w+)" from source "(?P<source>\w+)"')


def _unparsable(exc: SourceError, env_file: str | None) -> SettingsError:
    """pydantic-settings refuses a JSON setting before validation; name it, never its value
    (ENRICH_KAFKA_CONFIG holds secrets), and say where in the text the JSON broke."""
    found = _SOURCE_FIELD.search(str(exc))
    name = f"{ENV_PREFIX}{found['field'].upper()}" if found else "a JSON setting"
    where = (
        f" (in {ENV_PREFIX}ENV_FILE {env_file})" if found and "DotEnv" in found["source"] else ""
    )
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):
        why = f"{cause.msg} at line {cause.lineno}, column {cause.colno}"
    else:
        why = type(cause).__name__ if cause is not None else "cannot be read"
    return SettingsError(f"invalid settings:\n  {name}{where}: not valid JSON ({why})")


S = TypeVar("S", bound=_EnrichSettings)


def load_settings(cls: type[S] = Settings, **overrides: Any) -> S:  # type: ignore[assignment]
    """Read settings, or raise SettingsError naming every bad variable.

    Refused first: an ENRICH_ENV_FILE that is not there, and an ENRICH_* variable that no
    program of the project reads (a typo would otherwise leave its setting at the default).
    """
    from dataflows.environment import check_environment  # reads every program's settings

    env_file = check_environment(os.environ)
    try:
        return cls(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except SourceError as exc:
        raise _unparsable(exc, env_file) from None
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {_named(err['loc'], message)}")
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None


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


@contextmanager
def exit_on_bad_settings() -> Iterator[None]:
    """Every program's start-up: a bad setting prints its message and exits 2, no traceback."""
    try:
        yield
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
