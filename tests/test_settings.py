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
    ],
)
def test_a_bad_setting_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert f"{name}:" in message
    assert says in message


def test_every_bad_setting_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENRICH_SHARDS", "x")
    monkeypatch.setenv("ENRICH_SINK_PARTITIONS", "y")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "ENRICH_SHARDS" in str(raised.value)
    assert "ENRICH_SINK_PARTITIONS" in str(raised.value)
