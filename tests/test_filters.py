"""Conditions from settings, evaluated the same way for events and reference rows."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import TestingSource, run_main
from prometheus_client.registry import REGISTRY
from pydantic import ValidationError

from config.base import SettingsError
from config.lookups import DEMO_LOOKUPS
from dataflows.flow import build_flow
from dataflows.settings import load_settings
from operators.decode import Decoder, ReferenceSchema
from operators.filters import FILTER_FIELD_MISSING, Condition, FieldMissing, all_of, check_fields
from operators.records import DeadLetter, Event, Kind, RawRecord, RefUpdate


@pytest.mark.parametrize(
    ("op", "value", "actual", "expected"),
    [
        ("==", "ACTIVE", "ACTIVE", True),
        ("==", "ACTIVE", "RETIRED", False),
        ("!=", "ACTIVE", "RETIRED", True),
        (">", 100, 100.5, True),
        (">", 100, 100, False),
        (">=", 100, 100, True),
        ("<", 100, 99, True),
        ("<=", 100, 101, False),
        ("in", ["XNYS", "XLON"], "XLON", True),
        ("not_in", ["XNYS", "XLON"], "XLON", False),
    ],
)
def test_each_operator(op: str, value: object, actual: object, expected: bool) -> None:
    assert Condition(field="f", op=op, value=value).matches({"f": actual}) is expected


def test_an_incomparable_value_does_not_match() -> None:
    price_over = Condition(field="price", op=">", value=100)
    assert not price_over.matches({"price": "expensive"})
    assert not price_over.matches({"price": None})


def test_a_record_without_the_field_is_no_clean_no() -> None:
    """A misspelt field would otherwise drop every record as a plain "no"."""
    price_over = Condition(field="price", op=">", value=100)
    with pytest.raises(FieldMissing) as missing:
        price_over.matches({"prise": 150})
    assert missing.value.field == "price"
    keep = all_of([Condition(field="side", op="==", value="buy"), price_over])
    assert keep is not None
    with pytest.raises(FieldMissing):
        keep({"side": "buy"})


def test_all_of_needs_every_condition() -> None:
    keep = all_of(
        [
            Condition(field="price", op=">", value=100),
            Condition(field="side", op="==", value="buy"),
        ]
    )
    assert keep is not None
    assert keep({"price": 101, "side": "buy"})
    assert not keep({"price": 101, "side": "sell"})
    assert all_of([]) is None


def test_bad_conditions_are_refused() -> None:
    with pytest.raises(ValidationError, match="needs a list"):
        Condition(field="x", op="in", value="abc")
    with pytest.raises(ValidationError):
        Condition(field="x", op="like", value="a%")
    with pytest.raises(ValidationError):
        Condition(field="x", op="==", value=1, extra=True)


def test_check_fields_names_the_field_and_the_nearest_known_one() -> None:
    conditions = [
        Condition(field="price", op=">", value=1),
        Condition(field="prise", op=">", value=1),
    ]
    with pytest.raises(ValueError) as refused:
        check_fields(conditions, {"price", "size"}, "declared event fields", "Declare it.")
    assert str(refused.value) == (
        "filter field 'prise' is not among the declared event fields (price, size); "
        "did you mean 'price'? Declare it."
    )
    with pytest.raises(ValueError, match=r"\(price, size\)\. Declare it\.$"):
        check_fields(
            [Condition(field="qqq", op="==", value=1)], {"price", "size"}, "x", "Declare it."
        )
    check_fields(conditions[:1], {"price"}, "x", "y")


# --- In the dataflow's settings: refused at start where the settings declare the fields ---


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("ENRICH_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_an_event_filter_on_an_undeclared_field_is_refused_at_start(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("ENRICH_EVENT_FILTER", '[{"field": "prise", "op": ">", "value": 100}]')
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert "ENRICH_EVENT_FILTER: filter field 'prise' is not among the declared event fields" in (
        message
    )
    assert "did you mean 'price'?" in message
    assert "declare it in ENRICH_EVENT_FIELDS" in message


@pytest.mark.parametrize("field", ["price", "size", "security_id", "event_id", "ts", "venue"])
def test_an_event_filter_may_test_every_declared_event_field(
    clean_env: pytest.MonkeyPatch, field: str
) -> None:
    clean_env.setenv("ENRICH_EVENT_FIELDS", '{"price": "float", "size": "int", "venue": "str"}')
    clean_env.setenv("ENRICH_EVENT_FILTER", json.dumps([{"field": field, "op": "!=", "value": 0}]))
    assert load_settings().event_filter[0].field == field


def _lookup(**changes: Any) -> str:
    lookup = {
        "name": "security",
        "key_field": "security_id",
        "demo_table": "securities",
        "columns": {"name": "str", "status": "str"},
        "version_field": "seq",
    }
    return json.dumps([{**lookup, **changes}])


def test_a_lookup_filter_on_a_field_that_is_no_column_is_refused_at_start(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("ENRICH_LOOKUPS", _lookup(filter=[{"field": "staus", "op": "==", "value": 1}]))
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert (
        "ENRICH_LOOKUPS: [0]: filter field 'staus' is not among the columns and version_field "
        in (message)
    )
    assert "of lookup 'security' (name, seq, status); did you mean 'status'?" in message
    assert "add it to the columns" in message


@pytest.mark.parametrize("field", ["status", "seq"])
def test_a_lookup_filter_may_test_its_columns_and_version(
    clean_env: pytest.MonkeyPatch, field: str
) -> None:
    clean_env.setenv("ENRICH_LOOKUPS", _lookup(filter=[{"field": field, "op": "!=", "value": 0}]))
    assert load_settings().lookups[0].filter[0].field == field


# --- In the decoder: where only records can tell, a dead letter ---------------------------

DECODER = Decoder(
    lookup_field="security_id",
    event_id_field="event_id",
    event_time_field="ts",
    event_fields={"price": "float"},
    references={
        "security": ReferenceSchema(
            {"name": "str", "status": "str"},
            keep=all_of([Condition(field="status", op="==", value="ACTIVE")]),
        )
    },
    max_record_bytes=1_000,
    keep_event=all_of([Condition(field="price", op=">", value=100)]),
)


def test_an_event_without_the_filtered_field_is_a_dead_letter() -> None:
    value = b'{"security_id": "S1", "prise": 150}'
    letter = DECODER.decode(RawRecord(Kind.EVENT, None, value, "events/0/1"))
    assert letter == DeadLetter(
        FILTER_FIELD_MISSING,
        "the event filter tests field 'price', which the record lacks",
        value,
        None,
        "events/0/1",
    )
    kept = DECODER.decode(RawRecord(Kind.EVENT, None, b'{"security_id": "S1", "price": 150}', "o"))
    assert isinstance(kept, Event)
    dropped = b'{"security_id": "S1", "price": 50}'
    assert DECODER.decode(RawRecord(Kind.EVENT, None, dropped, "o")) is None


def test_a_reference_row_without_the_filtered_column_is_a_dead_letter_not_a_delete() -> None:
    value = b'{"name": "A"}'
    raw = RawRecord(Kind.REFERENCE, b"S1", value, "refs/0/1", lookup="security")
    letter = DECODER.decode(raw)
    assert isinstance(letter, DeadLetter)
    assert (letter.reason, letter.payload, letter.key) == (FILTER_FIELD_MISSING, value, b"S1")
    assert letter.detail == "lookup 'security' tests field 'status', which the record lacks"
    retired = RawRecord(Kind.REFERENCE, b"S1", b'{"status": "RETIRED"}', "r", lookup="security")
    assert DECODER.decode(retired) == RefUpdate("S1", None, None, "r", filtered=True)


def test_the_dataflow_dead_letters_them_counts_them_and_warns_once_per_field(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(
        sqlite_path=tmp_path / "enriched.sqlite",
        dead_letter_path=tmp_path / "dead_letters.jsonl",
        lookups=[DEMO_LOOKUPS[0].model_copy(update={"miss_policy": "pass_through"})],
        event_fields={"price": "float", "venue": "str"},
        event_filter=[{"field": "venue", "op": "==", "value": "XLON"}],
        miss_timeout_seconds=3_600.0,
    )
    events = [
        {"event_id": "a", "security_id": "S1", "venue": "XLON"},
        {"event_id": "b", "security_id": "S1", "venue": "XNYS"},
        {"event_id": "c", "security_id": "S1", "vneue": "XLON"},
        {"event_id": "d", "security_id": "S1"},
        {"event_id": "e", "security_id": "S1", "price": 3},
    ]
    items = [
        RawRecord(Kind.EVENT, None, json.dumps(e).encode(), f"test/event/0/{i}")
        for i, e in enumerate(events)
    ]
    counted = ("enrich_dead_letters_total", {"reason": FILTER_FIELD_MISSING})
    before = REGISTRY.get_sample_value(*counted) or 0.0
    with caplog.at_level(logging.WARNING, logger="enrich.filters"):
        run_main(build_flow(settings, {"input": TestingSource(items)}))
    letters = [json.loads(line) for line in settings.dead_letter_path.read_text().splitlines()]
    assert sorted(letter["reason"] for letter in letters) == [FILTER_FIELD_MISSING] * 3
    assert (REGISTRY.get_sample_value(*counted) or 0.0) - before == 3
    warnings = [r.getMessage() for r in caplog.records if r.name == "enrich.filters"]
    assert len(warnings) == 1
    assert "the event filter tests field 'venue', which the record lacks" in warnings[0]
    with closing(sqlite3.connect(settings.sqlite_path)) as conn:
        assert conn.execute("SELECT event_id FROM enriched_events").fetchall() == [("a",)]
