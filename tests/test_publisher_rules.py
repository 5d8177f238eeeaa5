"""The publisher holds back every row the dataflow's decode would refuse, by decode's own rules.

A row published with an int beyond 64 bits, text over 1,000 characters or a
value not of its column's declared type was dead-lettered by the dataflow
(`invalid_field`); the publisher now holds it back as it holds back NaN:
counted by rule, one warning per column and rule naming the first key, exit 4.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from conftest import MockKafka
from test_publisher import TOPIC, load, run_cli, words

from config.base import SettingsError
from config.lookups import Lookup
from dataflows.settings import load_settings
from operators.decode import Invalid, ReferenceSchema
from operators.records import Kind, RawRecord
from reference.reader import RecordBuilder, RowKind
from reference.settings import PublisherSettings

COLUMNS: dict[str, Any] = {"lots": "int", "note": "str", "price": "float"}
LOOKUPS = [{"name": "bond", "key_field": "bond_id", "columns": COLUMNS, "topic": TOPIC}]
SETTINGS: dict[str, Any] = {
    "lookups": LOOKUPS,
    "publish_table": "bonds",
    "publish_key_column": "id",
    "publish_columns": ["lots", "note", "price"],
    "publish_change_column": "updated_at",
}
BIG = 10**19
"""Beyond 64 bits: SQLite keeps it as REAL 1e19 (as an Oracle NUMBER(38) would give an int)."""
LONG = "x" * 1001


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ENRICH_"):
            monkeypatch.delenv(name)


class Bonds:
    def __init__(self, path: Path) -> None:
        self.path = path
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute(
                "CREATE TABLE bonds (id TEXT PRIMARY KEY, lots INTEGER, note TEXT, price REAL, "
                "updated_at INTEGER)"
            )

    def put(
        self, key: str, updated_at: int, lots: Any = 5, note: Any = "ok", price: Any = 1.5
    ) -> None:
        with closing(sqlite3.connect(self.path)) as conn, conn:
            conn.execute(
                "INSERT OR REPLACE INTO bonds VALUES (?, ?, ?, ?, ?)",
                (key, str(lots) if isinstance(lots, int) else lots, note, price, updated_at),
            )


def raw_topic(kafka: MockKafka) -> dict[str, bytes | None]:
    return {msg.key().decode(): msg.value() for msg in kafka.consume_all(TOPIC)}


def decoded(value: dict[str, Any]) -> Invalid | None:
    """What the dataflow's decode makes of `value` published for key B1: None if accepted."""
    raw = RawRecord(Kind.REFERENCE, b"B1", json.dumps(value).encode(), "test", lookup="bond")
    try:
        ReferenceSchema(COLUMNS, "version").decode(raw, 65_536)
    except Invalid as exc:
        return exc
    return None


def test_the_dataflow_refuses_the_values_the_publisher_holds_back() -> None:
    """The same JSON the publisher would have sent, through the dataflow's decode."""
    ok = {"lots": 5, "note": "ok", "price": 1.5, "version": 1}
    assert decoded(ok) is None
    for bad in ({"lots": 1e19}, {"lots": BIG}, {"note": LONG}, {"lots": "abc"}):
        refused = decoded({**ok, **bad})
        assert refused is not None and refused.reason == "invalid_field", bad


def test_rows_decode_would_refuse_are_held_back_counted_by_rule_and_logged_once_per_column(
    kafka: MockKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bonds = Bonds(tmp_path / "reference.sqlite")
    bonds.put("B1", 1)
    bonds.put("B2", 2)
    load(kafka, tmp_path, **SETTINGS)
    bonds.put("B2", 3, lots=BIG)
    bonds.put("B3", 4, lots=BIG + 1)
    bonds.put("B4", 5, note=LONG)
    bonds.put("B5", 6, note=LONG + "y")
    bonds.put("B6", 7, price=float("inf"))
    bonds.put("B7", 8)

    with caplog.at_level("WARNING", logger="enrich.publisher"):
        report = load(kafka, tmp_path, full=True, **SETTINGS)

    values = raw_topic(kafka)
    assert set(values) == {"B1", "B2", "B7"}
    for key, value in values.items():
        assert value is not None
        assert decoded(json.loads(value)) is None, key
    assert json.loads(values["B2"] or b"")["version"] == 2  # the earlier record, not tombstoned
    counts = report.counts
    assert (counts.read, counts.published, counts.tombstones, counts.held_back) == (7, 2, 0, 5)
    assert counts.held_back_by_rule == {"invalid_field": 4, "not_finite": 1}
    assert report.watermark == 8
    assert "held back 5 (not published: invalid_field 4, not_finite 1)" in words(report.summary())
    per_column = [r for r in caplog.records if getattr(r, "column", None)]
    assert [(r.key, r.column, r.rule) for r in per_column] == [  # type: ignore[attr-defined]
        ("B2", "lots", "invalid_field"),
        ("B4", "note", "invalid_field"),
        ("B6", "price", "not_finite"),
    ]
    lots, note, price = (r.getMessage() for r in per_column)
    assert "row 'B2': column 'lots' holds 1e+19: lots: " in lots and "invalid_field" in lots
    assert "row 'B4': column 'note'" in note and "at most 1000 characters" in note
    assert "'x" in note and LONG not in note  # the value shortened in the log
    assert "row 'B6': column 'price' holds inf" in price
    assert any("5 rows were not published" in r.getMessage() for r in caplog.records)


def test_a_value_of_the_wrong_type_for_its_declared_column_is_held_back(
    kafka: MockKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bonds = Bonds(tmp_path / "reference.sqlite")
    bonds.put("B1", 1, lots="abc")
    bonds.put("B2", 2, note=7)  # SQLite TEXT affinity keeps it as text: accepted
    with caplog.at_level("WARNING", logger="enrich.publisher"):
        report = load(kafka, tmp_path, **SETTINGS)
    assert (report.counts.published, report.counts.held_back) == (1, 1)
    assert set(raw_topic(kafka)) == {"B2"}
    assert any("row 'B1': column 'lots' holds 'abc'" in r.getMessage() for r in caplog.records)


def test_an_int_beyond_64_bits_from_the_driver_is_held_back() -> None:
    """An Oracle NUMBER(38) comes as a Python int, which SQLite cannot hold."""
    builder = RecordBuilder(
        selected=("id", "lots", "updated_at"),
        key_column="id",
        columns=("lots",),
        change_column="updated_at",
        version_field="version",
        schema=ReferenceSchema(COLUMNS, "version"),
    )
    record = builder.record(("B1", 2**63, 5))
    assert (record.value, record.kind, record.column, record.rule) == (
        None,
        RowKind.HELD_BACK,
        "lots",
        "invalid_field",
    )
    assert builder.record(("B1", 2**63 - 1, 5)).kind is RowKind.LIVE
    assert builder.record(("", 1, 5)).rule == "missing_lookup_id"


def test_the_command_exits_4_for_rows_decode_would_refuse(kafka: MockKafka, tmp_path: Path) -> None:
    bonds = Bonds(tmp_path / "reference.sqlite")
    bonds.put("B1", 1, lots=BIG)
    bonds.put("B2", 2, note=LONG)
    bonds.put("B3", 3)
    env = {
        "ENRICH_LOOKUPS": json.dumps(LOOKUPS),
        "ENRICH_PUBLISH_TABLE": "bonds",
        "ENRICH_PUBLISH_KEY_COLUMN": "id",
        "ENRICH_PUBLISH_COLUMNS": json.dumps(SETTINGS["publish_columns"]),
        "ENRICH_PUBLISH_CHANGE_COLUMN": "updated_at",
    }
    held = run_cli(kafka, tmp_path, **env)
    assert held.returncode == 4, held.stderr
    assert "held back 2 (not published: invalid_field 2)" in words(held.stdout)
    assert "rows published 1" in words(held.stdout)
    assert held.stderr.count("row 'B1': column 'lots'") == 1
    assert held.stderr.count("row 'B2': column 'note'") == 1
    assert "Traceback" not in held.stderr
    bonds.put("B1", 4)
    bonds.put("B2", 5)
    fixed = run_cli(kafka, tmp_path, **env)
    assert fixed.returncode == 0, fixed.stderr
    assert set(raw_topic(kafka)) == {"B1", "B2", "B3"}


@pytest.mark.parametrize("change", [BIG, 1e-200])
def test_a_change_value_decode_refuses_as_a_version_fails_the_load_before_the_watermark(
    kafka: MockKafka, tmp_path: Path, change: float
) -> None:
    """As for NaN: every later row would be held back behind such a watermark."""
    from reference.watermark import StateFile

    bonds = Bonds(tmp_path / "reference.sqlite")
    bonds.put("B1", 1)
    load(kafka, tmp_path, **SETTINGS)
    bonds.put("B2", 1)
    with closing(sqlite3.connect(bonds.path)) as conn, conn:
        conn.execute("UPDATE bonds SET updated_at = ? WHERE id = 'B2'", (str(change),))
    assert decoded({"version": float(change)}) is not None
    with pytest.raises(ValueError, match=r"the change column holds .* as a version"):
        load(kafka, tmp_path, full=True, **SETTINGS)  # full: 1e-200 is below the watermark
    saved = StateFile(tmp_path / "state" / "publisher.json").load()
    assert saved is not None and saved.watermark == 1
    assert set(raw_topic(kafka)) == {"B1"}


def as_of_lookup(**validity: str) -> Lookup:
    return Lookup(
        name="bond", key_field="bond_id", columns=COLUMNS, topic=TOPIC, mode="as_of", **validity
    )


def test_an_as_of_row_without_its_validity_time_is_held_back() -> None:
    """Decode would dead-letter it (`missing_valid_from`), so the publisher keeps it back."""
    builder = RecordBuilder(
        selected=("id", "lots", "effective", "updated_at"),
        key_column="id",
        columns=("lots", "effective"),
        change_column="updated_at",
        version_field="version",
        schema=as_of_lookup(valid_from="field", valid_from_field="effective").reference_schema(
            publisher=True
        ),
    )
    assert builder.record(("B1", 1, "2024-01-01T00:00:00Z", 5)).kind is RowKind.LIVE
    record = builder.record(("B1", 1, None, 5))
    assert (record.kind, record.rule) == (RowKind.HELD_BACK, "missing_valid_from")


def test_the_publisher_reads_no_record_time_and_no_filter() -> None:
    """Its rows have no Kafka timestamp yet, and the filter decides deletes downstream."""
    lookup = Lookup.model_validate(
        {
            **as_of_lookup(valid_from="record_time").model_dump(),
            "filter": [{"field": "note", "op": "==", "value": "x"}],
        }
    )
    assert lookup.reference_schema().valid_from == "record_time"
    published = lookup.reference_schema(publisher=True)
    assert published.valid_from is None and published.keep is None


BROKERS = {"kafka_brokers": ["localhost:9092"]}


def test_an_as_of_validity_field_the_publisher_does_not_publish_is_refused() -> None:
    lookups = [as_of_lookup(valid_from="field", valid_from_field="effective").model_dump()]
    with pytest.raises(SettingsError, match="validity time from 'effective', which is not"):
        load_settings(PublisherSettings, **{**SETTINGS, "lookups": lookups, **BROKERS})
    load_settings(
        PublisherSettings,
        **{**SETTINGS, "lookups": lookups, "publish_columns": ["lots", "effective"], **BROKERS},
    )
