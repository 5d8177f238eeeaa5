"""Settings come from ENRICH_* variables and an optional env file; bad ones are named."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from config import environment
from config.base import EnrichSettings, SettingsError
from dataflows.settings import PROGRAM_SETTINGS, Settings, check_dataflow, load_settings
from operators.identifiers import MAX_LENGTH, check_identifier, check_qualified, is_identifier
from reference.settings import PublisherSettings, ReferenceTableSettings

ORACLE = {
    "ENRICH_DATABASE": "oracle",
    "ENRICH_ORACLE_USER": "enrich",
    "ENRICH_ORACLE_PASSWORD": "ora-s3cret",
    "ENRICH_ORACLE_DSN": "db.example:1521/FREEPDB1",
}


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
        ' "columns": {"cusip": "str", "sector": "str", "status": "str"},'
        ' "miss_defaults": {"sector": "UNKNOWN"},'
        ' "filter": [{"field": "status", "op": "==", "value": "ACTIVE"}]}]',
    )
    settings = load_settings()
    assert settings.shards == 8
    assert settings.miss_policy == "dead_letter"
    (lookup,) = settings.lookups
    assert lookup.defaults_row() == (None, "UNKNOWN", None)
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
        ("ENRICH_TABLE", "drop table x", "not a valid table name"),
        ("ENRICH_EVENT_FIELDS", '{"price": "decimal"}', "'str', 'int', 'float' or 'bool'"),
        ("ENRICH_LOOKUPS", "[]", "at least one lookup"),
        ("ENRICH_LOOKUPS", lookups(columns={}), "at least one column"),
        ("ENRICH_LOOKUPS", lookups(columns={"price": "float"}), "already an event field"),
        ("ENRICH_LOOKUPS", lookups(miss_defaults={"nope": 1}), "are not columns of"),
        ("ENRICH_LOOKUPS", lookups(name="drop table"), "not a valid lookup name"),
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


class Refused(str):
    """The rule a refusal must state."""


MISS_DEFAULT_CASES = [
    # (declared type, the default as JSON text, Refused(rule stated) or the value kept)
    ("int", str(2**63), Refused("less than or equal to 9223372036854775807")),
    ("int", str(-(2**63) - 1), Refused("greater than or equal to -9223372036854775808")),
    ("int", "1.5", Refused("fractional part")),
    ("int", '"twelve"', Refused("valid integer")),
    ("int", '"12"', 12),
    ("float", "NaN", Refused("finite number")),
    ("float", "1e999", Refused("finite number")),
    ("float", '"-Infinity"', Refused("finite number")),
    ("float", '"2.5"', 2.5),
    ("str", json.dumps("x" * 1001), Refused("at most 1000 characters")),
    ("str", "5", Refused("valid string")),
    ("str", json.dumps("x" * 1000), "x" * 1000),
    ("bool", '"maybe"', Refused("valid boolean")),
    ("bool", '"yes"', True),
    ("bool", "0", False),
    ("int", "null", None),
]


@pytest.mark.parametrize(("kind", "text", "outcome"), MISS_DEFAULT_CASES)
def test_miss_defaults_meet_the_rules_decode_applies_to_a_reference_row(
    monkeypatch: pytest.MonkeyPatch, kind: str, text: str, outcome: Any
) -> None:
    """A default reaches the table undecoded: one decode would dead-letter in a reference row
    stops start-up naming lookup, column and rule; one it would coerce is coerced the same."""
    from operators.decode import Invalid, ReferenceSchema
    from operators.records import Kind, RawRecord

    row = f'{{"level": {text}}}'.encode()
    try:
        decoded = ReferenceSchema({"level": kind}).decode(  # type: ignore[dict-item]
            RawRecord(Kind.REFERENCE, b"AAPL", row, "refs/0/1", lookup="security"), 10_000
        )
    except Invalid:  # what decode dead-letters
        decoded = None
    setting = lookups(columns={"name": "str", "level": kind}).replace(
        '"topic": "reference"', f'"topic": "reference", "miss_defaults": {row.decode()}'
    )
    monkeypatch.setenv("ENRICH_LOOKUPS", setting)
    if isinstance(outcome, Refused):
        assert decoded is None
        with pytest.raises(SettingsError) as raised:
            load_settings()
        message = str(raised.value)
        assert "ENRICH_LOOKUPS: [0].miss_defaults: lookup 'security', column level:" in message
        assert outcome in message
    else:
        assert decoded is not None and decoded.row == (outcome,)
        (lookup,) = load_settings().lookups
        assert lookup.defaults_row() == (None, outcome)
        assert type(lookup.defaults_row()[1]) is type(outcome)


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


# --- One identifier rule (issue 12, item 16) ---------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "enriched_events\n",
        "quotes\r",
        " quotes",
        "a\u0661",
        "a\u0663b",
        "\uff41bc",
        "a" * 129,
        "1a",
        "a-b",
    ],
)
def test_the_identifier_rule_matches_the_whole_ascii_name(name: str) -> None:
    assert not is_identifier(name)
    with pytest.raises(ValueError, match="not a valid table name"):
        check_identifier(name, "table name")


def test_identifiers_may_be_as_long_as_oracle_12_2_allows() -> None:
    """128 characters, not 12.1's 30: see operators/identifiers.py for why."""
    assert MAX_LENGTH == 128
    assert is_identifier("a" * 31)
    assert is_identifier("a" * 128)
    assert not is_identifier("a" * 129)
    assert check_qualified("owner.table", "table name") == "owner.table"
    with pytest.raises(ValueError, match="not a valid table name"):
        check_qualified("owner.table\n", "table name")


def _publisher_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENRICH_KAFKA_BROKERS", "k1:9092")


BAD_NAMES = ["enriched_events\n", "a\u0663", "a" * 129]
"""A trailing newline, an Arabic-Indic digit, one character too many."""

IDENTIFIER_SETTINGS: list[tuple[str, Any, str, bool]] = [
    # (variable, how a name becomes its value, what the message calls it, publisher's?)
    ("ENRICH_TABLE", lambda n: n, "table name", False),
    ("ENRICH_DEAD_LETTER_TABLE", lambda n: n, "dead-letter table name", False),
    ("ENRICH_EVENT_FIELDS", lambda n: json.dumps({n: "str"}), "column name", False),
    ("ENRICH_LOOKUPS", lambda n: lookups(name=n), "lookup name", False),
    ("ENRICH_LOOKUPS", lambda n: lookups(columns={n: "str"}), "column name", False),
    ("ENRICH_LOOKUPS", lambda n: lookups(prefix=n[:-1] + "_" + n[-1:]), "column name", False),
    ("ENRICH_PUBLISH_TABLE", lambda n: n, "table name", True),
    ("ENRICH_PUBLISH_TABLE", lambda n: f"owner.{n}", "table name", True),
    ("ENRICH_PUBLISH_KEY_COLUMN", lambda n: n, "column name", True),
    ("ENRICH_PUBLISH_COLUMNS", lambda n: json.dumps(["cusip", n]), "column name", True),
    ("ENRICH_PUBLISH_CHANGE_COLUMN", lambda n: n, "column name", True),
    ("ENRICH_PUBLISH_SOFT_DELETE_COLUMN", lambda n: n, "column name", True),
    (
        "ENRICH_PUBLISH_FILTER",
        lambda n: json.dumps([{"field": n, "op": "==", "value": 1}]),
        "column name",
        True,
    ),
]


@pytest.mark.parametrize("bad", BAD_NAMES, ids=["newline", "unicode_digit", "129_chars"])
@pytest.mark.parametrize(
    ("variable", "value", "what", "publisher"),
    IDENTIFIER_SETTINGS,
    ids=[f"{row[0]}-{index}" for index, row in enumerate(IDENTIFIER_SETTINGS)],
)
def test_every_setting_that_names_an_identifier_uses_the_one_rule(
    monkeypatch: pytest.MonkeyPatch,
    bad: str,
    variable: str,
    value: Any,
    what: str,
    publisher: bool,
) -> None:
    _publisher_env(monkeypatch)
    monkeypatch.setenv(variable, value(bad))
    with pytest.raises(SettingsError) as raised:
        load_settings(PublisherSettings if publisher else Settings)
    message = str(raised.value)
    assert f"{variable}: " in message
    assert f"not a valid {what}" in message


def test_the_table_name_leaves_room_for_its_index_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sink names the lookup_id index `<table>_lookup_id`, which must be an identifier too."""
    room = MAX_LENGTH - len("_lookup_id")
    monkeypatch.setenv("ENRICH_TABLE", "t" * room)
    assert load_settings().table == "t" * room
    monkeypatch.setenv("ENRICH_TABLE", "t" * (room + 1))
    with pytest.raises(SettingsError, match=r"ENRICH_TABLE: .* is not a valid index name"):
        load_settings()


def test_a_topic_name_with_a_trailing_newline_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENRICH_KAFKA_EVENTS_TOPIC", "events\n")
    with pytest.raises(SettingsError, match=r"ENRICH_KAFKA_EVENTS_TOPIC: .*not a legal Kafka"):
        load_settings()


# --- Unknown variables and the env file (item 10) ----------------------------------------


def test_a_misspelled_variable_stops_start_up_naming_the_nearest_known_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENRICH_MISS_POLCY", "dead_letter")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "ENRICH_MISS_POLCY: no program of this project reads this variable" in message
    assert "did you mean ENRICH_MISS_POLICY?" in message
    assert "dead_letter" not in message  # values are never shown: some are secrets


def test_a_variable_another_program_reads_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """One ConfigMap serves every program: the dataflow accepts the publisher's variables,
    and the publisher the dataflow's."""
    _publisher_env(monkeypatch)
    monkeypatch.setenv("ENRICH_PUBLISH_TABLE", "securities")
    monkeypatch.setenv("ENRICH_PUBLISH_FILTER", "[]")
    monkeypatch.setenv("ENRICH_SHARDS", "8")
    monkeypatch.setenv("ENRICH_ALLOW_DEMO_INTO_ORACLE", "false")
    assert load_settings().shards == 8
    assert load_settings(PublisherSettings).publish_table == "securities"
    assert load_settings(ReferenceTableSettings).publish_table == "securities"


def test_every_unknown_variable_is_named_at_once_and_case_is_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("enrich_shards", "8")  # pydantic-settings reads it: known
    monkeypatch.setenv("ENRICH_TABEL", "quotes")
    monkeypatch.setenv("enrich_zzz_qqq", "1")
    monkeypatch.setenv("NOT_ENRICH_ANYTHING", "1")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    lines = str(raised.value).splitlines()[1:]
    assert len(lines) == 2
    assert "ENRICH_TABEL" in lines[0] and "did you mean ENRICH_TABLE?" in lines[0]
    assert "enrich_zzz_qqq" in lines[1] and "did you mean" not in lines[1]


def test_the_env_files_keys_are_checked_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / "enrich.env"
    env_file.write_text("ENRICH_SHARDS=16\nENRICH_SINK_PARTITONS=3\nOTHER=1\n")
    monkeypatch.setenv("ENRICH_ENV_FILE", str(env_file))
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert f"ENRICH_SINK_PARTITONS (in ENRICH_ENV_FILE {env_file}): no program" in message
    assert "did you mean ENRICH_SINK_PARTITIONS?" in message


def test_a_missing_env_file_stops_start_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENRICH_ENV_FILE", str(tmp_path / "nowhere.env"))
    with pytest.raises(SettingsError, match=r"ENRICH_ENV_FILE: '.*nowhere.env' is not a file"):
        load_settings()
    monkeypatch.setenv("ENRICH_ENV_FILE", str(tmp_path))
    with pytest.raises(SettingsError, match=r"ENRICH_ENV_FILE: .* is not a file"):
        load_settings()


def test_the_known_variables_are_derived_from_every_settings_class() -> None:
    known = environment.known_variables(PROGRAM_SETTINGS)
    for cls in (Settings, PublisherSettings, ReferenceTableSettings):
        assert {f"ENRICH_{name.upper()}" for name in cls.model_fields} <= known
    assert {"ENRICH_ENV_FILE", "ENRICH_PUBLISH_FILTER", "ENRICH_ALLOW_DEMO_INTO_ORACLE"} <= known


def _subclasses(cls: type[BaseSettings]) -> Iterator[type[BaseSettings]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_a_settings_class_added_anywhere_in_the_project_is_known() -> None:
    """Importing every module of the project finds no ENRICH_ settings class whose
    variables `dataflows.settings.PROGRAM_SETTINGS` would not know."""
    root = Path(__file__).resolve().parent.parent
    packages = ("config", "operators", "sources", "sinks", "telemetry", "reference", "dataflows")
    for package in (*packages, "commands"):
        for module in pkgutil.walk_packages([str(root / package)], prefix=f"{package}."):
            if not module.name.endswith(".__main__"):  # runs the command
                importlib.import_module(module.name)
    for cls in _subclasses(EnrichSettings):
        if cls.__module__.split(".")[0] != "tests":
            assert any(issubclass(program, cls) for program in PROGRAM_SETTINGS), cls


# --- JSON settings and their messages (item 11) ------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "publisher"),
    [
        ("ENRICH_LOOKUPS", "{x", False),
        ("ENRICH_KAFKA_CONFIG", 'notjson "sasl.password": "hunter2"', False),
        ("ENRICH_EVENT_FIELDS", '{"price": "float",}', False),
        ("ENRICH_PUBLISH_COLUMNS", "[cusip", True),
        ("ENRICH_KAFKA_CONFIG", '{"sasl.password": "hunter2"', True),
    ],
)
def test_invalid_json_is_named_without_echoing_the_value(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, publisher: bool
) -> None:
    _publisher_env(monkeypatch)
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as raised:
        load_settings(PublisherSettings if publisher else Settings)
    message = str(raised.value)
    assert f"{variable}: not valid JSON (" in message
    assert "line 1, column" in message
    assert "hunter2" not in message
    assert value not in message
    assert raised.value.__cause__ is None  # no chained traceback carrying the value


def test_invalid_json_in_the_env_file_names_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / "enrich.env"
    env_file.write_text('ENRICH_KAFKA_CONFIG={"sasl.password": "hunter2"\n')
    monkeypatch.setenv("ENRICH_ENV_FILE", str(env_file))
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert f"ENRICH_KAFKA_CONFIG (in ENRICH_ENV_FILE {env_file}): not valid JSON" in message
    assert "hunter2" not in message


def test_a_lookup_missing_required_fields_names_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENRICH_LOOKUPS", '[{"name": "x"}]')
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "ENRICH_LOOKUPS: [0].key_field: Field required" in message
    assert "ENRICH_LOOKUPS: [0].columns: Field required" in message


def test_the_demo_source_needs_its_securities_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    only_files = [
        {"name": "security", "key_field": "security_id", "columns": {"name": "str"},
         "file": "securities.jsonl"},
    ]  # fmt: skip
    monkeypatch.setenv("ENRICH_LOOKUPS", json.dumps(only_files))
    with pytest.raises(SettingsError, match=r'ENRICH_LOOKUPS: .*"demo_table": "securities"'):
        load_settings()
    monkeypatch.setenv("ENRICH_SOURCE", "kafka")
    monkeypatch.setenv("ENRICH_KAFKA_BROKERS", "k1:9092")
    assert load_settings().lookups[0].file == Path("securities.jsonl")


def test_a_demo_table_is_read_by_one_lookup_only(monkeypatch: pytest.MonkeyPatch) -> None:
    twice = json.loads(lookups())
    twice.append({**twice[0], "name": "again", "prefix": "again_"})
    monkeypatch.setenv("ENRICH_LOOKUPS", json.dumps(twice))
    with pytest.raises(SettingsError, match="demo_table 'securities' is already read"):
        load_settings()


# --- The demo never writes into Oracle unless asked (item 15) ----------------------------


def test_the_demo_source_into_oracle_is_refused_unless_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in ORACLE.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match="ENRICH_SOURCE: the source is the demo"):
        check_dataflow(load_settings())
    monkeypatch.setenv("ENRICH_ALLOW_DEMO_INTO_ORACLE", "true")
    check_dataflow(load_settings())
    monkeypatch.delenv("ENRICH_ALLOW_DEMO_INTO_ORACLE")
    monkeypatch.setenv("ENRICH_SOURCE", "kafka")
    monkeypatch.setenv("ENRICH_KAFKA_BROKERS", "k1:9092")
    check_dataflow(load_settings())
    monkeypatch.setenv("ENRICH_SOURCE", "demo")
    monkeypatch.setenv("ENRICH_DATABASE", "sqlite")
    check_dataflow(load_settings())


# --- Every program: exit 2 with the message, never a traceback (items 10, 11, 15) -------

PROGRAMS = {
    "dataflow": ["-m", "bytewax.run", "dataflows.enrich"],
    "publisher": ["-m", "commands", "publish", "--once"],
    "demo_table": ["-m", "commands.demo_table"],
    "demo_to_kafka": ["-m", "commands.demo_to_kafka"],
    "create_tables": ["-m", "commands.create_tables", "--print"],
}


def run_program(program: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("ENRICH_")}
    return subprocess.run(
        [sys.executable, *PROGRAMS[program]],
        env={**clean, "ENRICH_KAFKA_BROKERS": "127.0.0.1:1", **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("program", sorted(PROGRAMS))
@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("ENRICH_MISS_POLCY", "dead_letter", "did you mean ENRICH_MISS_POLICY?"),
        ("ENRICH_KAFKA_CONFIG", "notjson-s3cret", "not valid JSON"),
        ("ENRICH_ENV_FILE", "missing.env", "is not a file"),
    ],
)
def test_every_program_exits_2_naming_the_variable_without_a_traceback(
    tmp_path: Path, program: str, variable: str, value: str, says: str
) -> None:
    done = run_program(program, tmp_path, **{variable: value})
    assert done.returncode == 2, done.stderr
    assert f"{variable}: " in done.stderr and says in done.stderr
    assert "Traceback" not in done.stderr
    assert "s3cret" not in done.stderr + done.stdout


def test_the_dataflow_exits_2_rather_than_write_demo_rows_into_oracle(tmp_path: Path) -> None:
    done = run_program("dataflow", tmp_path, **ORACLE)
    assert done.returncode == 2, done.stderr
    assert "ENRICH_SOURCE: the source is the demo (the default when unset)" in done.stderr
    assert "ENRICH_ALLOW_DEMO_INTO_ORACLE=true" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "demo-output").exists()


def test_kubernetes_service_links_of_an_enrich_service_are_not_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without `enableServiceLinks: false` (Bytewax's chart), a Service named `enrich` or
    `enrich-api` adds variables like these to every pod of the namespace."""
    links = {
        "ENRICH_SERVICE_HOST": "10.0.0.7",
        "ENRICH_SERVICE_PORT": "9999",
        "ENRICH_SERVICE_PORT_API": "3030",
        "ENRICH_PORT": "tcp://10.0.0.7:9999",
        "ENRICH_PORT_9999_TCP": "tcp://10.0.0.7:9999",
        "ENRICH_PORT_9999_TCP_PROTO": "tcp",
        "ENRICH_PORT_9999_TCP_PORT": "9999",
        "ENRICH_PORT_9999_TCP_ADDR": "10.0.0.7",
        "ENRICH_API_SERVICE_HOST": "fd00::7",
        "ENRICH_API_PORT": "tcp://[fd00::7]:3030",
    }
    for name, value in links.items():
        monkeypatch.setenv(name, value)
    load_settings()
    monkeypatch.setenv("ENRICH_METRICS_PORT", "dead_letter")  # not a service link's value
    with pytest.raises(SettingsError, match="ENRICH_METRICS_PORT: no program"):
        load_settings()


SECURITY = {
    "name": "security",
    "key_field": "security_id",
    "demo_table": "securities",
    "topic": "reference",
    "columns": {"name": "str"},
}


@pytest.mark.parametrize(
    "extra",
    [{"valid_from": "field"}, {"valid_from": "version", "valid_from_field": "effective"}],
    ids=["field_without_name", "name_without_field"],
)
def test_valid_from_field_is_given_exactly_when_valid_from_is_field(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, str]
) -> None:
    monkeypatch.setenv("ENRICH_LOOKUPS", json.dumps([{**SECURITY, "mode": "as_of", **extra}]))
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "valid_from_field names the field" in str(raised.value)


def test_as_of_settings_reach_the_join_and_its_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataflows.flow import enrich_config

    lookup = {
        **SECURITY,
        "mode": "as_of",
        "valid_from": "field",
        "valid_from_field": "effective",
        "history_seconds": 60,
        "history_versions": 3,
        "row_ttl_seconds": 120,
    }
    monkeypatch.setenv("ENRICH_LOOKUPS", json.dumps([lookup]))
    settings = load_settings()
    config = enrich_config(settings, settings.lookups[0])
    assert (config.mode, config.history_seconds, config.history_versions) == ("as_of", 60, 3)
    assert config.row_ttl_seconds == 120
    schema = settings.lookups[0].reference_schema()
    assert (schema.valid_from, schema.valid_from_field) == ("field", "effective")


@pytest.mark.parametrize(
    ("source", "dataflow_wide", "per_lookup", "expected"),
    [
        ("demo", None, None, "event"),
        ("kafka", None, None, "processing"),
        ("demo", "processing", None, "processing"),
        ("kafka", "event", None, "event"),
        ("kafka", "event", "processing", "processing"),
    ],
)
def test_the_timeout_clock_is_the_lookup_s_then_the_dataflow_s_then_the_source_s(
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    dataflow_wide: str | None,
    per_lookup: str | None,
    expected: str,
) -> None:
    lookup = {**SECURITY} if per_lookup is None else {**SECURITY, "timeout_clock": per_lookup}
    monkeypatch.setenv("ENRICH_LOOKUPS", json.dumps([lookup]))
    monkeypatch.setenv("ENRICH_SOURCE", source)
    monkeypatch.setenv("ENRICH_KAFKA_BROKERS", "localhost:9092")
    if dataflow_wide is not None:
        monkeypatch.setenv("ENRICH_TIMEOUT_CLOCK", dataflow_wide)
    settings = load_settings()
    assert settings.clock_of(settings.lookups[0]) == expected
