"""Settings come from ENRICH_* variables and an optional env file; bad ones are named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dataflows.settings import SettingsError, load_settings


def lookups(**changes: Any) -> str:
    """ENRICH_LOOKUPS holding one valid lookup, changed as asked."""
    lookup = {
        "name": "security",
        "key_field": "security_id",
        "columns": {"name": "str"},
        "demo_table": "securities",
        "topic": "reference",
    }
    return json.dumps([{**lookup, **changes}])


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ENRICH_"):
            monkeypatch.delenv(name)


def test_defaults_run_the_demo_without_any_setting() -> None:
    settings = load_settings()
    assert settings.source == "demo"
    assert [lookup.name for lookup in settings.lookups] == ["security", "exchange"]
    assert settings.lookup_field == "security_id"
    assert list(settings.reference_columns()) == [
        "cusip",
        "name",
        "sector",
        "exchange_id",
        "exchange_name",
        "exchange_country",
    ]
    assert settings.lookups[0].defaults_row() == (None, None, None, None)


def test_environment_variables_are_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENRICH_SHARDS", "8")
    monkeypatch.setenv("ENRICH_MISS_POLICY", "dead_letter")
    monkeypatch.setenv(
        "ENRICH_LOOKUPS",
        '[{"name": "security", "key_field": "security_id", "demo_table": "securities",'
        ' "columns": {"cusip": "str", "sector": "str"}, "miss_defaults": {"sector": "UNKNOWN"},'
        ' "filter": [{"field": "status", "op": "==", "value": "ACTIVE"}]}]',
    )
    settings = load_settings()
    assert settings.shards == 8
    assert settings.miss_policy == "dead_letter"
    (lookup,) = settings.lookups
    assert lookup.defaults_row() == (None, "UNKNOWN")
    assert lookup.filter[0].matches({"status": "ACTIVE"})


def test_env_file_is_read_and_real_variables_override_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / "enrich.env"
    env_file.write_text("ENRICH_SHARDS=16\nENRICH_TABLE=quotes\n")
    monkeypatch.setenv("ENRICH_ENV_FILE", str(env_file))
    monkeypatch.setenv("ENRICH_TABLE", "trades")
    settings = load_settings()
    assert settings.shards == 16
    assert settings.table == "trades"


def test_a_misconfigured_chain_is_refused_naming_the_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    security = {"name": "security", "key_field": "security_id", "demo_table": "securities"}
    monkeypatch.setenv(
        "ENRICH_LOOKUPS",
        json.dumps(
            [
                {**security, "columns": {"name": "str"}},
                {"name": "exchange", "key_field": "exchange_id", "columns": {"mic": "str"}},
            ]
        ),
    )
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "ENRICH_LOOKUPS: lookup 1 ('exchange')" in message
    assert "key_field 'exchange_id' is produced neither by the events" in message


def test_a_later_lookup_may_key_on_a_column_an_earlier_one_adds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chain = [
        {"name": "security", "key_field": "security_id", "demo_table": "securities",
         "columns": {"issuer_id": "str"}, "prefix": "sec_"},
        {"name": "issuer", "key_field": "sec_issuer_id", "demo_table": "exchanges",
         "columns": {"country": "str"}},
        {"name": "country", "key_field": "country", "file": "countries.jsonl",
         "columns": {"region": "str"}, "miss_timeout_seconds": 0.5},
    ]  # fmt: skip
    monkeypatch.setenv("ENRICH_LOOKUPS", json.dumps(chain))
    settings = load_settings()
    assert list(settings.reference_columns()) == ["sec_issuer_id", "country", "region"]
    assert settings.lookups[2].miss_timeout_seconds == 0.5


def test_with_kafka_every_lookup_needs_its_own_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENRICH_SOURCE", "kafka")
    monkeypatch.setenv("ENRICH_KAFKA_BROKERS", "k1:9092")
    monkeypatch.setenv("ENRICH_LOOKUPS", lookups(topic=None))
    with pytest.raises(SettingsError, match=r"ENRICH_LOOKUPS: .*needs a topic or file"):
        load_settings()
    monkeypatch.setenv("ENRICH_LOOKUPS", lookups(topic="events"))
    with pytest.raises(SettingsError, match=r"ENRICH_LOOKUPS: .*topic 'events' is already read"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("ENRICH_SHARDS", "abc", "valid integer"),
        ("ENRICH_SHARDS", "0", "greater than 0"),
        ("ENRICH_JOIN_TYPE", "outer", "'left' or 'inner'"),
        ("ENRICH_MISS_TIMEOUT_SECONDS", "-1", "greater than 0"),
        ("ENRICH_TABLE", "drop table x", "not a valid column name"),
        ("ENRICH_EVENT_FIELDS", '{"price": "decimal"}', "'str', 'int', 'float' or 'bool'"),
        ("ENRICH_LOOKUPS", "[]", "at least one lookup"),
        ("ENRICH_LOOKUPS", lookups(columns={}), "at least one column"),
        ("ENRICH_LOOKUPS", lookups(columns={"price": "float"}), "already an event field"),
        ("ENRICH_LOOKUPS", lookups(miss_defaults={"nope": 1}), "are not columns of"),
        ("ENRICH_LOOKUPS", lookups(name="drop table"), "not a valid column name"),
        ("ENRICH_LOOKUPS", lookups(prefix="x y"), "not a valid column name"),
        ("ENRICH_LOOKUPS", lookups(miss_policy="ignore"), "'defaults', 'dead_letter'"),
        ("ENRICH_LOOKUPS", lookups(colour="red"), "Extra inputs are not permitted"),
        ("ENRICH_EVENT_FILTER", '[{"field": "price", "op": "~", "value": 1}]', "'=='"),
        ("ENRICH_EVENT_FIELDS", '{"ts": "float"}', "already have their own columns"),
        ("ENRICH_SOURCE", "kafka", "at least one broker is needed"),
        ("ENRICH_DEAD_LETTER_TOPIC", "dlq", "at least one broker is needed"),
        ("ENRICH_KAFKA_EVENTS_TOPIC", "my topic", "not a legal Kafka topic name"),
        ("ENRICH_KAFKA_EVENTS_START", "middle", "'earliest' or 'latest'"),
        ("ENRICH_KAFKA_CONFIG", "[1]", "valid dictionary"),
        ("ENRICH_DATABASE", "oracle", "oracle_user, oracle_password, oracle_dsn must be set"),
        ("ENRICH_DATABASE", "postgres", "'sqlite' or 'oracle'"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert says in message
    named = {"broker": "ENRICH_KAFKA_BROKERS", "oracle_user": "ENRICH_ORACLE_USER"}
    named_var = next((var for word, var in named.items() if word in says), name)
    assert f"{named_var}:" in message


def test_every_bad_setting_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENRICH_SHARDS", "x")
    monkeypatch.setenv("ENRICH_SINK_PARTITIONS", "y")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "ENRICH_SHARDS" in str(raised.value)
    assert "ENRICH_SINK_PARTITIONS" in str(raised.value)


def test_kafka_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENRICH_SOURCE", "kafka")
    monkeypatch.setenv("ENRICH_KAFKA_BROKERS", "k1:9092, k2:9092")
    monkeypatch.setenv("ENRICH_KAFKA_CONFIG", '{"security.protocol": "SASL_SSL"}')
    monkeypatch.setenv("ENRICH_KAFKA_SASL_USERNAME", "enrich")
    monkeypatch.setenv("ENRICH_KAFKA_SASL_PASSWORD", "s3cret-pw")
    settings = load_settings()
    assert settings.kafka_brokers == ["k1:9092", "k2:9092"]
    assert settings.kafka_client_config() == {
        "security.protocol": "SASL_SSL",
        "sasl.username": "enrich",
        "sasl.password": "s3cret-pw",
    }


def test_secrets_never_show_in_the_settings_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENRICH_SOURCE", "kafka")
    monkeypatch.setenv("ENRICH_KAFKA_BROKERS", "k1:9092")
    monkeypatch.setenv("ENRICH_KAFKA_CONFIG", '{"ssl.key.password": "key-pw"}')
    monkeypatch.setenv("ENRICH_KAFKA_SASL_PASSWORD", "s3cret-pw")
    settings = load_settings()
    for text in (repr(settings), str(settings), str(settings.model_dump())):
        assert "s3cret-pw" not in text
        assert "key-pw" not in text


def test_oracle_connection_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENRICH_DATABASE", "oracle")
    monkeypatch.setenv("ENRICH_ORACLE_USER", "enrich")
    monkeypatch.setenv("ENRICH_ORACLE_PASSWORD", "ora-s3cret")
    monkeypatch.setenv("ENRICH_ORACLE_DSN", "db.example:1521/FREEPDB1")
    settings = load_settings()
    assert settings.oracle_dsn == "db.example:1521/FREEPDB1"
    assert settings.oracle_password is not None
    assert settings.oracle_password.get_secret_value() == "ora-s3cret"
    assert "ora-s3cret" not in repr(settings)
