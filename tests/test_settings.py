"""Settings come from ENRICH_* variables and an optional env file; bad ones are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataflows.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ENRICH_"):
            monkeypatch.delenv(name)


def test_defaults_run_the_demo_without_any_setting() -> None:
    settings = load_settings()
    assert settings.source == "demo"
    assert settings.reference_columns == {"cusip": "str", "name": "str", "sector": "str"}
    assert settings.defaults_row() == (None, None, None)


def test_environment_variables_are_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENRICH_SHARDS", "8")
    monkeypatch.setenv("ENRICH_MISS_POLICY", "dead_letter")
    monkeypatch.setenv("ENRICH_MISS_DEFAULTS", '{"sector": "UNKNOWN"}')
    settings = load_settings()
    assert settings.shards == 8
    assert settings.miss_policy == "dead_letter"
    assert settings.defaults_row() == (None, None, "UNKNOWN")


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


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("ENRICH_SHARDS", "abc", "valid integer"),
        ("ENRICH_SHARDS", "0", "greater than 0"),
        ("ENRICH_JOIN_TYPE", "outer", "'left' or 'inner'"),
        ("ENRICH_MISS_TIMEOUT_SECONDS", "-1", "greater than 0"),
        ("ENRICH_TABLE", "drop table x", "not a valid column name"),
        ("ENRICH_EVENT_FIELDS", '{"price": "decimal"}', "'str', 'int', 'float' or 'bool'"),
        ("ENRICH_REFERENCE_COLUMNS", "{}", "at least one reference column"),
        ("ENRICH_REFERENCE_COLUMNS", '{"price": "float"}', "also named in event_fields"),
        ("ENRICH_MISS_DEFAULTS", '{"nope": 1}', "not reference columns"),
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


def test_the_reference_topic_must_differ_from_the_events_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENRICH_SOURCE", "kafka")
    monkeypatch.setenv("ENRICH_KAFKA_BROKERS", "k1:9092")
    monkeypatch.setenv("ENRICH_KAFKA_REFERENCE_TOPIC", "events")
    with pytest.raises(SettingsError, match=r"ENRICH_KAFKA_REFERENCE_TOPIC: .*must differ"):
        load_settings()
