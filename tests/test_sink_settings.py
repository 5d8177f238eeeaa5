"""The sink's settings: database choice, dead-letter table, retry, breaker and pool."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from config.base import SettingsError
from dataflows import database
from dataflows.flow import main_sink
from dataflows.settings import load_settings
from sinks.oracle import OracleDialect
from sinks.retry import RetryPolicy
from sinks.sqlite import SqliteDialect
from sinks.table import DeadLetterTable

ORACLE = {
    "ENRICH_DATABASE": "oracle",
    "ENRICH_ORACLE_USER": "enrich",
    "ENRICH_ORACLE_PASSWORD": "ora-s3cret",
    "ENRICH_ORACLE_DSN": "db.example:1521/FREEPDB1",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ENRICH_"):
            monkeypatch.delenv(name)


def test_defaults_write_to_sqlite_with_the_documented_retry_and_breaker() -> None:
    settings = load_settings()
    assert database.dialect(settings) == SqliteDialect(Path("demo-output/enriched.sqlite"))
    assert database.dead_letter_table(settings) == DeadLetterTable("enrich_dead_letters")
    assert database.retry_policy(settings) == RetryPolicy(
        initial_seconds=0.1, max_seconds=30.0, breaker_failures=5, breaker_reset_seconds=30.0
    )


def test_the_sink_is_wired_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENRICH_DEAD_LETTER_TABLE", "refused_rows")
    monkeypatch.setenv("ENRICH_SINK_BREAKER_FAILURES", "9")
    monkeypatch.setenv("ENRICH_SINK_RETRY_MAX_SECONDS", "4.5")
    sink = main_sink(load_settings())
    assert sink.dead_letters == DeadLetterTable("refused_rows")
    assert (sink.policy.breaker_failures, sink.policy.max_seconds) == (9, 4.5)


def test_oracle_gets_a_pool_as_large_as_the_sink_partitions_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in ORACLE.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ENRICH_SINK_PARTITIONS", "6")
    dialect = database.dialect(load_settings())
    assert isinstance(dialect, OracleDialect)
    assert (dialect.user, dialect.dsn, dialect.pool_min, dialect.pool_max) == (
        "enrich",
        "db.example:1521/FREEPDB1",
        1,
        6,
    )
    monkeypatch.setenv("ENRICH_ORACLE_POOL_MAX", "3")
    monkeypatch.setenv("ENRICH_ORACLE_POOL_MIN", "3")
    dialect = database.dialect(load_settings())
    assert isinstance(dialect, OracleDialect)
    assert (dialect.pool_min, dialect.pool_max) == (3, 3)


@pytest.mark.parametrize(
    ("settings", "named", "says"),
    [
        ({"ENRICH_DEAD_LETTER_TABLE": "dead letters"}, "DEAD_LETTER_TABLE", "not a valid"),
        ({"ENRICH_DEAD_LETTER_TABLE": "Enriched_Events"}, "DEAD_LETTER_TABLE", "must differ"),
        ({"ENRICH_SINK_RETRY_INITIAL_SECONDS": "0"}, "SINK_RETRY_INITIAL_SECONDS", "greater than"),
        ({"ENRICH_SINK_RETRY_MAX_SECONDS": "-1"}, "SINK_RETRY_MAX_SECONDS", "greater than 0"),
        (
            {"ENRICH_SINK_RETRY_INITIAL_SECONDS": "5", "ENRICH_SINK_RETRY_MAX_SECONDS": "1"},
            "SINK_RETRY_INITIAL_SECONDS",
            "must not exceed sink_retry_max_seconds",
        ),
        ({"ENRICH_SINK_BREAKER_FAILURES": "0"}, "SINK_BREAKER_FAILURES", "greater than 0"),
        ({"ENRICH_SINK_BREAKER_FAILURES": "x"}, "SINK_BREAKER_FAILURES", "valid integer"),
        ({"ENRICH_SINK_BREAKER_RESET_SECONDS": "0"}, "SINK_BREAKER_RESET_SECONDS", "greater"),
        ({"ENRICH_ORACLE_POOL_MIN": "-1"}, "ORACLE_POOL_MIN", "greater than or equal to 0"),
        ({"ENRICH_ORACLE_POOL_MAX": "0"}, "ORACLE_POOL_MAX", "greater than 0"),
        ({"ENRICH_ORACLE_POOL_TIMEOUT_SECONDS": "0"}, "ORACLE_POOL_TIMEOUT_SECONDS", "greater"),
        ({"ENRICH_ORACLE_POOL_MIN": "5"}, "ORACLE_POOL_MIN", "must not exceed oracle_pool_max"),
        (
            {"ENRICH_ORACLE_POOL_MIN": "3", "ENRICH_ORACLE_POOL_MAX": "2"},
            "ORACLE_POOL_MIN",
            "must not exceed oracle_pool_max",
        ),
        (
            {**ORACLE, "ENRICH_SINK_BATCH_SIZE": "70000"},
            "SINK_BATCH_SIZE",
            "at most 65535 with Oracle",
        ),
    ],
)
def test_a_bad_sink_setting_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, settings: dict[str, str], named: str, says: str
) -> None:
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert f"ENRICH_{named}:" in message
    assert says in message
