"""The reference publisher: a SQLite table into the mock Kafka cluster, over real sockets.

What the topic holds is read back with a plain consumer (latest record per
key, as compaction would leave it), and decoded by the dataflow's own decoder.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import run_main
from conftest import MockKafka
from flowrun import ROOT

from commands.demo_table import demo_exchanges, demo_securities, write_tables
from commands.demo_table import main as demo_table_main
from config.base import SettingsError
from config.lookups import DEMO_LOOKUPS
from dataflows.flow import build_flow, decoder, demo_source
from dataflows.settings import Settings, load_settings
from operators.records import Kind, RawRecord, RefUpdate
from reference.guard import MassDeleteRefused
from reference.load import Publisher
from reference.query import ReferenceQuery, check_column, check_table
from reference.reader import version_of
from reference.settings import PublisherSettings
from reference.watermark import StateError, StateFile
from sinks.kafka_producer import DeliveryFailed
from sources.demo import EXCHANGES, build_plan

TOPIC = "reference"
Row = dict[str, Any]
SECURITY = DEMO_LOOKUPS[0]
"""The dataflow's security lookup: the publisher's defaults publish its columns."""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ENRICH_"):
            monkeypatch.delenv(name)


class Table:
    """The reference table the tests edit, as the nightly load or an application would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute(
                "CREATE TABLE securities (security_id TEXT PRIMARY KEY, cusip TEXT, name TEXT, "
                "sector TEXT, exchange_id TEXT, status TEXT, deleted_at TEXT, updated_at INTEGER)"
            )

    def put(self, security_id: str, updated_at: int, **values: Any) -> None:
        row = {
            "cusip": f"C-{security_id}",
            "name": f"Name {security_id}",
            "sector": "Energy",
            "exchange_id": "XNYS",
            "status": "ACTIVE",
            "deleted_at": None,
            **values,
        }
        with closing(sqlite3.connect(self.path)) as conn, conn:
            conn.execute(
                "INSERT OR REPLACE INTO securities VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (security_id, *row.values(), updated_at),
            )

    def delete(self, security_id: str) -> None:
        with closing(sqlite3.connect(self.path)) as conn, conn:
            conn.execute("DELETE FROM securities WHERE security_id = ?", (security_id,))


@pytest.fixture
def table(tmp_path: Path) -> Table:
    return Table(tmp_path / "reference.sqlite")


def publisher_settings(kafka: MockKafka, work: Path, **overrides: Any) -> PublisherSettings:
    return load_settings(
        PublisherSettings,
        **{
            "kafka_brokers": kafka.bootstrap,
            "publish_sqlite_path": work / "reference.sqlite",
            "publish_state_path": work / "state" / "publisher.json",
            "progress_seconds": 0,
            **overrides,
        },
    )


def load(kafka: MockKafka, work: Path, full: bool = False, **overrides: Any) -> Any:
    """One load by a new publisher, as a new process would run it."""
    return Publisher(publisher_settings(kafka, work, **overrides)).load(full)


def topic(kafka: MockKafka) -> dict[str, Row | None]:
    """Latest record per key, None for a tombstone: what compaction keeps."""
    latest: dict[str, Row | None] = {}
    for msg in kafka.consume_all(TOPIC):
        value = msg.value()
        latest[msg.key().decode()] = None if value is None else json.loads(value)
    return latest


def record_count(kafka: MockKafka) -> int:
    return len(kafka.consume_all(TOPIC))


def published(security_id: str, version: int, **values: Any) -> Row:
    return {
        "cusip": f"C-{security_id}",
        "name": f"Name {security_id}",
        "sector": "Energy",
        "exchange_id": "XNYS",
        **values,
        "version": version,
    }


def test_a_full_load_publishes_every_row_keyed_by_id_with_its_version(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    table.put("SEC1", 100)
    table.put("SEC2", 200, sector="Utilities")
    table.put("SEC3", 150)
    report = load(kafka, tmp_path)
    assert topic(kafka) == {
        "SEC1": published("SEC1", 100),
        "SEC2": published("SEC2", 200, sector="Utilities"),
        "SEC3": published("SEC3", 150),
    }
    assert report.full
    assert (report.counts.read, report.counts.published, report.counts.tombstones) == (3, 3, 0)
    assert report.watermark == 200
    saved = StateFile(tmp_path / "state" / "publisher.json").load()
    assert saved is not None and saved.watermark == 200


def test_incremental_loads_publish_only_rows_changed_after_the_watermark(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    for i in range(1, 5):
        table.put(f"SEC{i}", 100 + i)
    load(kafka, tmp_path)
    table.put("SEC2", 300, name="Renamed")
    table.put("SEC9", 301)

    report = load(kafka, tmp_path)

    assert not report.full
    assert (report.counts.read, report.counts.published) == (2, 2)
    assert report.watermark == 301
    assert record_count(kafka) == 6
    latest = topic(kafka)
    assert latest["SEC2"] == published("SEC2", 300, name="Renamed")
    assert latest["SEC9"] == published("SEC9", 301)

    nothing = load(kafka, tmp_path)
    assert (nothing.full, nothing.counts.read, nothing.watermark) == (False, 0, 301)
    assert record_count(kafka) == 6


def run_cli(
    kafka: MockKafka, work: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "commands", "publish", *args],
        cwd=work,
        env=cli_env(kafka, work, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def cli_env(kafka: MockKafka, work: Path, **env: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ENRICH_")},
        "PYTHONPATH": str(ROOT),
        "ENRICH_KAFKA_BROKERS": kafka.bootstrap,
        "ENRICH_PUBLISH_SQLITE_PATH": str(work / "reference.sqlite"),
        "ENRICH_PUBLISH_STATE_PATH": str(work / "state" / "publisher.json"),
        **env,
    }


def words(text: str) -> str:
    return " ".join(text.split())


def test_a_new_process_resumes_from_the_state_file_without_republishing(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    for i in range(1, 6):
        table.put(f"SEC{i}", 10)
    secrets = {"ENRICH_KAFKA_SASL_PASSWORD": "pw-6f1e", "ENRICH_ORACLE_PASSWORD": "pw-93ab"}
    first = run_cli(kafka, tmp_path, ENRICH_PROGRESS_SECONDS="0.000001", **secrets)
    assert first.returncode == 0, first.stderr
    assert "reference load (full)" in first.stdout
    assert "rows published 5" in words(first.stdout)
    assert "full load: read 5 rows" in first.stderr
    assert not any(secret in first.stdout + first.stderr for secret in secrets.values())

    table.put("SEC3", 11, sector="Materials")
    second = run_cli(kafka, tmp_path, "--once")
    assert second.returncode == 0, second.stderr
    assert "reference load (incremental)" in second.stdout
    assert "rows published 1" in words(second.stdout)
    assert "watermark 11" in words(second.stdout)

    third = run_cli(kafka, tmp_path)
    assert third.returncode == 0, third.stderr
    assert "rows read 0 " in words(third.stdout)
    assert record_count(kafka) == 6
    assert topic(kafka)["SEC3"] == published("SEC3", 11, sector="Materials")


def test_the_watermark_passes_a_value_only_once_all_its_rows_are_delivered(
    kafka: MockKafka, tmp_path: Path, table: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of two over change values 10, 20, 20, 20, 30: 20 straddles two batches."""
    table.put("SEC0", 5)
    load(kafka, tmp_path)
    changes = {"SEC1": 10, "SEC2": 20, "SEC3": 20, "SEC4": 20, "SEC5": 30}
    for security_id, updated_at in changes.items():
        table.put(security_id, updated_at)
    saved: list[int] = []
    save = StateFile.save

    def checked_save(self: StateFile, state: Any) -> None:
        delivered = topic(kafka)
        assert all(k in delivered for k, change in changes.items() if change <= state.watermark)
        saved.append(state.watermark)
        save(self, state)

    monkeypatch.setattr(StateFile, "save", checked_save)
    report = load(kafka, tmp_path, publish_batch_size=2)
    assert saved == [10, 20, 30]
    assert report.watermark == 30


def test_a_row_gone_from_the_table_is_tombstoned_by_the_next_full_load(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    for i in range(1, 4):
        table.put(f"SEC{i}", i)
    load(kafka, tmp_path)
    kafka.produce(TOPIC, [(b"STRAY", b'{"name": "published by someone else"}')])
    table.delete("SEC2")

    incremental = load(kafka, tmp_path)
    assert incremental.counts.tombstones == 0  # a hard delete leaves no changed row to read

    full = load(kafka, tmp_path, full=True, publish_allow_mass_delete=True)
    assert full.counts.tombstones == 2
    latest = topic(kafka)
    assert latest["SEC2"] is None
    assert latest["STRAY"] is None
    assert latest["SEC1"] == published("SEC1", 1)
    assert latest["SEC3"] == published("SEC3", 3)

    again = load(kafka, tmp_path, full=True)
    assert again.counts.tombstones == 0


def test_soft_deleted_rows_become_tombstones(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    soft = {"publish_soft_delete_column": "deleted_at", "publish_allow_mass_delete": True}
    table.put("SEC1", 1)
    table.put("SEC2", 2)
    table.put("SEC3", 3, deleted_at="2026-01-01")
    first = load(kafka, tmp_path, **soft)
    assert (first.counts.published, first.counts.soft_deleted) == (2, 1)
    assert set(topic(kafka)) == {"SEC1", "SEC2"}

    table.put("SEC1", 4, deleted_at="2026-01-02")
    incremental = load(kafka, tmp_path, **soft)
    assert (incremental.counts.tombstones, incremental.counts.soft_deleted) == (1, 1)
    assert topic(kafka)["SEC1"] is None

    # Marked deleted without touching the change column: only a full load sees it.
    table.put("SEC2", 2, deleted_at="2026-01-03")
    full = load(kafka, tmp_path, full=True, **soft)
    assert full.counts.tombstones == 1
    assert topic(kafka) == {"SEC1": None, "SEC2": None}


def test_the_filter_keeps_rows_out_and_a_row_that_stops_matching_is_tombstoned(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    active = {"publish_filter": [{"field": "status", "op": "==", "value": "ACTIVE"}]}
    table.put("SEC1", 1)
    table.put("SEC2", 2)
    table.put("SEC3", 3, status="SUSPENDED")
    first = load(kafka, tmp_path, **active)
    assert (first.counts.published, first.counts.filtered_out) == (2, 1)
    assert set(topic(kafka)) == {"SEC1", "SEC2"}
    assert "status" not in topic(kafka)["SEC1"]  # filtered on, not published

    table.put("SEC1", 4, status="SUSPENDED")
    table.put("SEC3", 5)
    incremental = load(kafka, tmp_path, **active)
    assert (incremental.counts.tombstones, incremental.counts.published) == (1, 1)
    latest = topic(kafka)
    assert latest["SEC1"] is None
    assert latest["SEC3"] == published("SEC3", 5)


def test_a_misspelt_filter_field_is_refused_and_the_topic_keeps_its_rows(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    """SQLite reads an unknown quoted name as a string: every row failed the filter and
    the full load tombstoned every live key, with exit 0."""
    for i in range(1, 4):
        table.put(f"SEC{i}", i)
    assert run_cli(kafka, tmp_path).returncode == 0
    state_before = (tmp_path / "state" / "publisher.json").read_bytes()

    typo = '[{"field": "staus", "op": "==", "value": "ACTIVE"}]'
    refused = run_cli(kafka, tmp_path, "--full", ENRICH_PUBLISH_FILTER=typo)

    assert refused.returncode == 2, refused.stderr
    assert (
        "ENRICH_PUBLISH_FILTER: column 'staus' is not in table 'securities'; "
        "did you mean 'status'?" in refused.stderr
    )
    assert (
        "the table's columns: security_id, cusip, name, sector, exchange_id, status"
        in refused.stderr
    )
    assert "Traceback" not in refused.stderr
    assert record_count(kafka) == 3
    assert all(value is not None for value in topic(kafka).values())
    assert (tmp_path / "state" / "publisher.json").read_bytes() == state_before


@pytest.mark.parametrize(
    ("setting", "value", "variable"),
    [
        ("publish_key_column", "securty_id", "ENRICH_PUBLISH_KEY_COLUMN"),
        ("publish_columns", ["cusip", "nmae"], "ENRICH_PUBLISH_COLUMNS"),
        ("publish_change_column", "updated", "ENRICH_PUBLISH_CHANGE_COLUMN"),
        ("publish_soft_delete_column", "deleted", "ENRICH_PUBLISH_SOFT_DELETE_COLUMN"),
        ("publish_filter", [{"field": "sectr", "op": "==", "value": "x"}], "ENRICH_PUBLISH_FILTER"),
    ],
)
def test_every_column_a_setting_names_is_checked_before_anything_is_read(
    kafka: MockKafka,
    tmp_path: Path,
    table: Table,
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
    value: Any,
    variable: str,
) -> None:
    table.put("SEC1", 1)
    load(kafka, tmp_path)

    def no_reading(*_args: Any) -> None:
        raise AssertionError("read before the columns were checked")

    monkeypatch.setattr("reference.load.live_keys", no_reading)
    monkeypatch.setattr("reference.load.read", no_reading)
    for full in (True, False):
        with pytest.raises(SettingsError) as refused:
            load(kafka, tmp_path, full=full, **{setting: value})
        assert f"{variable}: column " in str(refused.value)
        assert "is not in table 'securities'" in str(refused.value)
    assert record_count(kafka) == 1


def test_column_names_match_the_table_whatever_their_case_in_sqlite(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    table.put("SEC1", 1)
    report = load(
        kafka,
        tmp_path,
        publish_key_column="SECURITY_ID",
        publish_filter=[{"field": "Status", "op": "==", "value": "ACTIVE"}],
    )
    assert report.counts.published == 1


def active_table(table: Table, active: int, suspended: int) -> None:
    for i in range(active + suspended):
        table.put(f"SEC{i}", i, status="ACTIVE" if i < active else "SUSPENDED")


def test_a_full_load_that_would_tombstone_too_many_keys_publishes_nothing_and_exits_3(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    active_table(table, 20, 0)
    assert run_cli(kafka, tmp_path).returncode == 0
    state_before = (tmp_path / "state" / "publisher.json").read_bytes()
    active_table(table, 1, 19)  # a reload gone wrong, or a wrong value in the filter
    only_active = '[{"field": "status", "op": "==", "value": "ACTIVE"}]'

    refused = run_cli(
        kafka, tmp_path, "--full", ENRICH_PUBLISH_FILTER=only_active, ENRICH_LOG_FORMAT="json"
    )

    assert refused.returncode == 3, refused.stderr
    assert record_count(kafka) == 20  # not one record, not even the row that matches
    assert (tmp_path / "state" / "publisher.json").read_bytes() == state_before
    lines = [json.loads(line) for line in refused.stderr.splitlines()]
    error = next(line for line in lines if line["level"] == "ERROR")
    assert "would tombstone 19 of the topic's 20 live keys (95.0%)" in error["message"]
    assert "nothing was published" in error["message"]
    assert "--allow-mass-delete" in error["message"]
    assert (error["would_delete"], error["live_keys"], error["max_delete_share"]) == (19, 20, 0.1)
    assert "Traceback" not in refused.stderr

    allowed = run_cli(
        kafka, tmp_path, "--full", "--allow-mass-delete", ENRICH_PUBLISH_FILTER=only_active
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "tombstones 19" in words(allowed.stdout)
    assert "allowed by --allow-mass-delete" in allowed.stderr
    assert [key for key, value in topic(kafka).items() if value is not None] == ["SEC0"]


def test_the_share_and_the_allowing_setting_decide_the_guard(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    active_table(table, 20, 0)
    load(kafka, tmp_path)
    only_active = {"publish_filter": [{"field": "status", "op": "==", "value": "ACTIVE"}]}

    active_table(table, 18, 2)  # 2 of 20: at the default share of 10 %, allowed
    assert load(kafka, tmp_path, full=True, **only_active).counts.tombstones == 2

    active_table(table, 12, 8)  # 6 more of the 18 live: a third
    with pytest.raises(MassDeleteRefused, match="would tombstone 6 of the topic's 18"):
        load(kafka, tmp_path, full=True, **only_active)
    before = record_count(kafka)
    assert load(kafka, tmp_path, full=True, publish_max_delete_share=0.5, **only_active).full
    assert record_count(kafka) == before + 12 + 6

    active_table(table, 0, 20)
    allowed = load(kafka, tmp_path, full=True, publish_allow_mass_delete=True, **only_active)
    assert allowed.counts.tombstones == 12


def test_a_first_load_into_an_empty_topic_passes_the_guard(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    active_table(table, 0, 3)
    only_active = {"publish_filter": [{"field": "status", "op": "==", "value": "ACTIVE"}]}
    report = load(kafka, tmp_path, **only_active)
    assert (report.full, report.counts.filtered_out, report.counts.tombstones) == (True, 3, 0)
    active_table(table, 3, 0)
    assert load(kafka, tmp_path, full=True, **only_active).counts.published == 3


def test_rows_deleted_while_a_full_load_reads_are_guarded_before_any_tombstone(
    kafka: MockKafka, tmp_path: Path, table: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count passes, then the table loses most rows before the publishing read."""
    active_table(table, 10, 0)
    load(kafka, tmp_path)
    count = Publisher._unpublished

    def count_then_delete(self: Publisher, *args: Any) -> int:
        would_delete = count(self, *args)
        for i in range(1, 10):
            table.delete(f"SEC{i}")
        return would_delete

    monkeypatch.setattr(Publisher, "_unpublished", count_then_delete)
    with pytest.raises(MassDeleteRefused, match=r"its 1 rows were published .* no tombstone"):
        load(kafka, tmp_path, full=True)
    assert all(value is not None for value in topic(kafka).values())


def test_a_failed_delivery_leaves_the_watermark_where_it_was(
    kafka: MockKafka, tmp_path: Path, table: Table, unused_port: int
) -> None:
    table.put("SEC1", 1)
    load(kafka, tmp_path)
    state_file = tmp_path / "state" / "publisher.json"
    before = state_file.read_bytes()
    table.put("SEC1", 2, name="Changed")

    with pytest.raises(DeliveryFailed, match="1 records were not delivered"):
        load(
            kafka,
            tmp_path,
            kafka_brokers=f"127.0.0.1:{unused_port}",
            kafka_config={"message.timeout.ms": "1000", "log_level": "0"},
        )
    assert state_file.read_bytes() == before

    retried = load(kafka, tmp_path)
    assert (retried.counts.published, retried.watermark) == (1, 2)
    assert topic(kafka)["SEC1"] == published("SEC1", 2, name="Changed")


@pytest.fixture
def unused_port() -> int:
    """A local port nothing listens on: a broker that is down."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_failed_load_exits_1_and_a_good_one_0(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    table.put("SEC1", 1)
    broken = run_cli(kafka, tmp_path, ENRICH_PUBLISH_TABLE="no_such_table")
    assert broken.returncode == 1
    assert "no such table: no_such_table" in broken.stderr
    assert not (tmp_path / "state" / "publisher.json").exists()
    assert run_cli(kafka, tmp_path).returncode == 0


def test_changed_settings_of_what_is_published_force_a_full_load(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    table.put("SEC1", 1)
    load(kafka, tmp_path)
    narrower = load(kafka, tmp_path, publish_columns=["name"])
    assert narrower.full
    assert topic(kafka)["SEC1"] == {"name": "Name SEC1", "version": 1}


def test_a_damaged_state_file_is_refused_and_a_full_load_replaces_it(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    table.put("SEC1", 1)
    state_file = tmp_path / "state" / "publisher.json"
    state_file.parent.mkdir()
    state_file.write_text('{"format": 1, "watermark": ')
    with pytest.raises(StateError, match="--full"):
        load(kafka, tmp_path)
    assert load(kafka, tmp_path, full=True).watermark == 1
    assert [p.name for p in state_file.parent.iterdir()] == ["publisher.json"]


def test_text_timestamps_are_versions_in_epoch_seconds_and_bound_back_as_text(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    with closing(sqlite3.connect(table.path)) as conn, conn:
        conn.execute("CREATE TABLE stamped (id INTEGER, name TEXT, changed TEXT)")
        conn.execute("INSERT INTO stamped VALUES (1, 'one', '2026-03-01 10:00:00.250')")
    stamped = {
        "publish_table": "stamped",
        "publish_key_column": "id",
        "publish_columns": ["name"],
        "publish_change_column": "changed",
    }
    first = load(kafka, tmp_path, **stamped)
    assert first.watermark == "2026-03-01 10:00:00.250"
    expected = datetime(2026, 3, 1, 10, 0, 0, 250_000, tzinfo=UTC).timestamp()
    assert topic(kafka)["1"] == {"name": "one", "version": expected}
    with closing(sqlite3.connect(table.path)) as conn, conn:
        conn.execute("INSERT INTO stamped VALUES (2, 'two', '2026-03-01 10:00:00.500')")
    second = load(kafka, tmp_path, **stamped)
    assert (second.counts.read, second.watermark) == (1, "2026-03-01 10:00:00.500")


@pytest.mark.parametrize(
    ("change", "version"),
    [
        (7, 7),
        (2**62, 2**62),
        (1.5, 1.5),
        (datetime(1970, 1, 2), 86_400.0),
        (datetime(1970, 1, 2, tzinfo=UTC), 86_400.0),
        ("1970-01-02T00:00:01", 86_401.0),
        (None, None),
    ],
)
def test_versions_are_numbers_as_they_are_and_timestamps_as_epoch_seconds(
    change: Any, version: Any
) -> None:
    assert version_of(change) == version


def test_a_change_value_that_is_no_version_is_refused() -> None:
    with pytest.raises(ValueError, match="must be a number, a DATE or a TIMESTAMP"):
        version_of("yesterday")


def test_what_was_published_is_what_the_dataflow_decodes(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    table.put("SEC1", 1_700_000_000)
    table.put("SEC2", 1_700_000_001, deleted_at="x")
    load(kafka, tmp_path, publish_soft_delete_column="deleted_at")
    table.put("SEC1", 1_700_000_002, deleted_at="x")
    load(kafka, tmp_path, publish_soft_delete_column="deleted_at")

    decode = decoder(load_settings(Settings, lookups=[SECURITY])).decode
    updates = [
        decode(
            RawRecord(
                Kind.REFERENCE, msg.key(), msg.value(), f"kafka/{msg.offset()}", lookup="security"
            )
        )
        for msg in kafka.consume_all(TOPIC)
    ]
    assert all(type(update) is RefUpdate for update in updates)
    assert [(u.lookup_id, u.row, u.version) for u in updates] == [
        ("SEC1", ("C-SEC1", "Name SEC1", "Energy", "XNYS"), 1_700_000_000),
        ("SEC1", None, None),
    ]


def test_the_dataflow_enriches_events_with_what_was_published(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    """The whole path: table, publisher, topic, the dataflow's Kafka source, its sink."""
    table.put("SEC1", 7, sector="Utilities")
    table.put("SEC2", 8)
    load(kafka, tmp_path)
    table.put("SEC2", 9, deleted_at="x")
    load(
        kafka,
        tmp_path,
        publish_soft_delete_column="deleted_at",
        publish_max_delete_share=0.5,
        full=True,
    )
    kafka.produce(
        "events",
        [
            (key.encode(), json.dumps({"event_id": event_id, "security_id": key}).encode())
            for event_id, key in (("e1", "SEC1"), ("e2", "SEC2"))
        ],
    )
    settings = load_settings(
        Settings,
        source="kafka",
        lookups=[SECURITY.model_copy(update={"topic": TOPIC})],
        kafka_brokers=kafka.bootstrap,
        kafka_stop_at_end=True,
        miss_timeout_seconds=3600,
        sqlite_path=tmp_path / "enriched.sqlite",
        dead_letter_path=tmp_path / "dead_letters.jsonl",
        progress_seconds=0,
    )
    run_main(build_flow(settings))
    with closing(sqlite3.connect(tmp_path / "enriched.sqlite")) as conn:
        conn.row_factory = sqlite3.Row
        rows = {r["event_id"]: dict(r) for r in conn.execute("SELECT * FROM enriched_events")}
    assert (rows["e1"]["status"], rows["e1"]["sector"], rows["e1"]["ref_version"]) == (
        "enriched",
        "Utilities",
        7,
    )
    assert (rows["e2"]["status"], rows["e2"]["sector"]) == ("lookup_miss", None)


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("ENRICH_KAFKA_BROKERS", "", "a broker is needed"),
        ("ENRICH_PUBLISH_TABLE", "securities; drop table x", "not a valid table name"),
        ("ENRICH_PUBLISH_TABLE", "a.b.c", "not a valid table name"),
        ("ENRICH_PUBLISH_KEY_COLUMN", 'id"', "not a valid column name"),
        ("ENRICH_PUBLISH_COLUMNS", '["name", "x or 1=1"]', "not a valid column name"),
        ("ENRICH_PUBLISH_COLUMNS", "[]", "at least one column"),
        ("ENRICH_PUBLISH_COLUMNS", '["name", "name"]', "names a column twice"),
        ("ENRICH_PUBLISH_CHANGE_COLUMN", "1st", "not a valid column name"),
        ("ENRICH_PUBLISH_SOFT_DELETE_COLUMN", "deleted at", "not a valid column name"),
        ("ENRICH_PUBLISH_FILTER", '[{"field": "status", "op": "like", "value": "A%"}]', "'=='"),
        ("ENRICH_PUBLISH_FILTER", '[{"field": "a--", "op": "==", "value": 1}]', "column name"),
        ("ENRICH_PUBLISH_DATABASE", "postgres", "'sqlite' or 'oracle'"),
        ("ENRICH_PUBLISH_BATCH_SIZE", "0", "greater than 0"),
        ("ENRICH_PUBLISH_INTERVAL_SECONDS", "-5", "greater than 0"),
        ("ENRICH_PUBLISH_LOOKUP", "exchang", "no lookup 'exchang' in ENRICH_LOOKUPS"),
        ("ENRICH_PUBLISH_COLUMNS", '["name", "version"]', "is the version field of lookup"),
        (
            "ENRICH_LOOKUPS",
            '[{"name": "security", "key_field": "security_id", "columns": {"name": "str"}, '
            '"topic": "ref topic"}]',
            "not a legal Kafka topic name",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    monkeypatch.setenv("ENRICH_KAFKA_BROKERS", "localhost:9092")
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as refused:
        load_settings(PublisherSettings)
    assert f"{variable}: " in str(refused.value)
    assert says in str(refused.value)


def test_oracle_without_credentials_is_refused_naming_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENRICH_KAFKA_BROKERS", "localhost:9092")
    monkeypatch.setenv("ENRICH_PUBLISH_DATABASE", "oracle")
    monkeypatch.setenv("ENRICH_ORACLE_DSN", "db.example:1521/REF")
    with pytest.raises(SettingsError) as refused:
        load_settings(PublisherSettings)
    assert "ENRICH_ORACLE_USER: " in str(refused.value)
    assert "so oracle_user, oracle_password must be set" in str(refused.value)


def test_the_command_exits_2_naming_a_bad_variable(kafka: MockKafka, tmp_path: Path) -> None:
    done = run_cli(kafka, tmp_path, ENRICH_PUBLISH_KEY_COLUMN="id; drop table securities")
    assert done.returncode == 2
    assert "ENRICH_PUBLISH_KEY_COLUMN: 'id; drop table securities' is not a valid" in done.stderr


@pytest.mark.parametrize(
    "name", ["", "1a", "a b", 'a"b', "a;b", "a-b", "a.b", "é", "a" * 129, "name\n"]
)
def test_column_names_outside_the_pattern_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid column name"):
        check_column(name)


@pytest.mark.parametrize("name", ["", ".t", "o.", "o.t.x", 'o."t"', "o t.t", "t;"])
def test_table_names_outside_the_pattern_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid table name"):
        check_table(name)


def test_queries_quote_checked_names_and_bind_the_watermark() -> None:
    columns = ("security_id", "name", "updated_at")
    oracle = ReferenceQuery("oracle", "ref.securities", columns, "updated_at")
    assert oracle.full() == 'SELECT "SECURITY_ID", "NAME", "UPDATED_AT" FROM "REF"."SECURITIES"'
    assert oracle.changed_since() == (
        'SELECT "SECURITY_ID", "NAME", "UPDATED_AT" FROM "REF"."SECURITIES" '
        'WHERE "UPDATED_AT" > :watermark ORDER BY "UPDATED_AT"'
    )
    sqlite = ReferenceQuery("sqlite", "securities", columns, "updated_at")
    assert sqlite.full() == 'SELECT "security_id", "name", "updated_at" FROM "securities"'
    with pytest.raises(ValueError, match="not a valid column name"):
        ReferenceQuery("sqlite", "securities", ("name", 'x" FROM y --'), "name")


def test_the_demo_table_holds_the_demo_securities_as_its_stream_leaves_them(
    kafka: MockKafka, tmp_path: Path
) -> None:
    demo = load_settings(Settings, demo_events=4_000, demo_references=300)
    securities = demo_securities(demo)
    truth = build_plan(demo_source(demo).cfg).truth
    gone = truth.deleted_ids - truth.republished_ids
    assert gone and truth.updated_ids
    assert len(securities) == 300 - len(gone)
    assert not gone & set(securities)

    settings = publisher_settings(kafka, tmp_path)
    write_tables(settings, securities, demo_exchanges(demo))
    report = Publisher(settings).load()
    assert report.counts.published == len(securities)
    assert report.watermark == 2  # the demo's newest version
    latest = topic(kafka)
    assert set(latest) == set(securities)
    some = next(iter(truth.updated_ids - truth.deleted_ids))
    (cusip, name, sector, exchange_id), version = securities[some]
    assert version == 2
    assert latest[some] == {
        "cusip": cusip,
        "name": name,
        "sector": sector,
        "exchange_id": exchange_id,
        "version": 2,
    }


def test_the_demo_exchanges_table_is_the_demo_s_exchanges(kafka: MockKafka, tmp_path: Path) -> None:
    demo = load_settings(Settings, demo_events=100, demo_references=10)
    exchanges = demo_exchanges(demo)
    assert exchanges == {
        mic: ((exchange.name, exchange.country), 1) for mic, exchange in EXCHANGES.items()
    }
    settings = publisher_settings(kafka, tmp_path)
    write_tables(settings, demo_securities(demo), exchanges)
    report = load(
        kafka,
        tmp_path,
        publish_table="exchanges",
        publish_key_column="exchange_id",
        publish_columns=["name", "country"],
        publish_lookup="exchange",
    )
    assert report.counts.published == len(EXCHANGES)
    assert {msg.key().decode() for msg in kafka.consume_all("exchanges")} == set(EXCHANGES)


def test_the_publisher_writes_the_topic_and_version_field_of_its_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One source of truth: ENRICH_LOOKUPS says where a lookup's rows are and how the
    version is named; the publisher takes both from the lookup it publishes for."""
    monkeypatch.setenv("ENRICH_KAFKA_BROKERS", "localhost:9092")
    lookups = [
        {"name": "security", "key_field": "security_id", "columns": {"name": "str"}, "topic": "s"},
        {
            "name": "issuer",
            "key_field": "issuer_id",
            "columns": {"name": "str"},
            "topic": "issuers",
            "version_field": "seq",
        },
        {"name": "sector", "key_field": "sector_id", "columns": {"x": "str"}, "file": "s.jsonl"},
    ]
    monkeypatch.setenv("ENRICH_LOOKUPS", json.dumps(lookups))
    first = load_settings(PublisherSettings)
    assert (first.reference_topic, first.version_field) == ("s", "version")
    monkeypatch.setenv("ENRICH_PUBLISH_LOOKUP", "issuer")
    issuer = load_settings(PublisherSettings)
    assert (issuer.reference_topic, issuer.version_field) == ("issuers", "seq")
    monkeypatch.setenv("ENRICH_PUBLISH_LOOKUP", "sector")
    with pytest.raises(SettingsError, match=r"ENRICH_PUBLISH_LOOKUP: lookup 'sector' .* no topic"):
        load_settings(PublisherSettings)
    for old in ("ENRICH_KAFKA_REFERENCE_TOPIC", "ENRICH_REFERENCE_VERSION_FIELD"):
        with monkeypatch.context() as patch:
            patch.setenv(old, "x")
            with pytest.raises(SettingsError, match=f"{old}: no program of this project reads"):
                load_settings(PublisherSettings)


def test_the_demo_table_refuses_to_write_its_securities_over_its_exchanges(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ENRICH_PUBLISH_TABLE", "exchanges")
    assert demo_table_main([]) == 2
    assert "ENRICH_PUBLISH_TABLE: the demo writes its exchanges to 'exchanges'" in (
        capsys.readouterr().err
    )


def test_sigterm_in_interval_mode_stops_after_the_load_under_way(
    kafka: MockKafka, tmp_path: Path, table: Table
) -> None:
    table.put("SEC1", 1)
    with open(tmp_path / "run.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "commands", "publish", "--interval", "0.2"],
            cwd=tmp_path,
            env=cli_env(kafka, tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "reference load (incremental)" not in (tmp_path / "run.log").read_text():
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    output = (tmp_path / "run.log").read_text()
    assert "SIGTERM: stopped after the load under way" in output
    assert "reference load (full)" in output
    assert StateFile(tmp_path / "state" / "publisher.json").load() is not None


PRICED: dict[str, Any] = {
    "publish_table": "priced",
    "publish_key_column": "id",
    "publish_columns": ["price", "ratio"],
    "publish_change_column": "updated_at",
}
"""Publisher settings for the table `Priced` makes."""


class Priced:
    """A table with REAL columns, which SQLite lets hold ±infinity (NaN it stores as NULL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute(
                "CREATE TABLE priced (id TEXT PRIMARY KEY, price REAL, ratio REAL, updated_at REAL)"
            )

    def put(self, key: str, updated_at: float, price: float = 1.5, ratio: float = 0.25) -> None:
        with closing(sqlite3.connect(self.path)) as conn, conn:
            conn.execute(
                "INSERT OR REPLACE INTO priced VALUES (?, ?, ?, ?)",
                (key, price, ratio, updated_at),
            )


INF = float("inf")


def strict_topic(kafka: MockKafka) -> dict[str, Row | None]:
    """`topic`, parsed as the dataflow parses: NaN and Infinity literals are not JSON."""
    from pydantic_core import from_json

    latest: dict[str, Row | None] = {}
    for msg in kafka.consume_all(TOPIC):
        value = msg.value()
        latest[msg.key().decode()] = (
            None if value is None else from_json(value, allow_inf_nan=False)
        )
    return latest


def test_a_row_with_an_infinite_value_is_held_back_counted_and_logged_once_per_column(
    kafka: MockKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Such a row was published as `Infinity`, which the dataflow dead-letters as invalid_json.

    Now it is not published: the topic keeps the key's earlier record (a full
    load does not tombstone it), the load counts it and warns once per column
    with the first key, and the watermark moves past it.
    """
    priced = Priced(tmp_path / "reference.sqlite")
    priced.put("P1", 1)
    priced.put("P2", 2)
    load(kafka, tmp_path, **PRICED)
    priced.put("P2", 3, price=INF)
    priced.put("P3", 4, price=-INF)
    priced.put("P4", 5, ratio=INF)
    priced.put("P5", 6)

    with caplog.at_level("WARNING", logger="enrich.publisher"):
        report = load(kafka, tmp_path, full=True, **PRICED)

    assert strict_topic(kafka) == {
        "P1": {"price": 1.5, "ratio": 0.25, "version": 1},
        "P2": {"price": 1.5, "ratio": 0.25, "version": 2},
        "P5": {"price": 1.5, "ratio": 0.25, "version": 6},
    }
    counts = report.counts
    assert (counts.read, counts.published, counts.tombstones, counts.held_back) == (5, 2, 0, 3)
    assert report.watermark == 6
    assert counts.held_back_by_rule == {"not_finite": 3}
    assert "held back 3 (not published: not_finite 3)" in words(report.summary())
    warned = [r for r in caplog.records if "not published" in r.getMessage()]
    per_column = [r.getMessage() for r in warned if getattr(r, "column", None)]
    assert len(per_column) == 2
    assert "'P2'" in per_column[0] and "column 'price' holds inf" in per_column[0]
    assert "'P4'" in per_column[1] and "column 'ratio' holds inf" in per_column[1]
    assert any("3 rows were not published" in r.getMessage() for r in warned)

    priced.put("P3", 7)
    priced.put("P6", 8, ratio=-INF)
    again = load(kafka, tmp_path, **PRICED)
    assert not again.full
    assert (again.counts.published, again.counts.held_back, again.watermark) == (1, 1, 8)
    assert strict_topic(kafka)["P3"] == {"price": 1.5, "ratio": 0.25, "version": 7}
    assert "P6" not in strict_topic(kafka)


def test_a_nan_from_the_database_holds_its_row_back_naming_the_column() -> None:
    """SQLite stores NaN as NULL, so a NaN (an Oracle BINARY_DOUBLE can hold one) is given
    to the record builder the loads use as a driver would return it."""
    from reference.reader import RecordBuilder, RowKind

    builder = RecordBuilder(
        selected=("id", "price", "ratio", "updated_at"),
        key_column="id",
        columns=("price", "ratio"),
        change_column="updated_at",
        version_field="version",
    )
    record = builder.record(("P1", 1.0, float("nan"), 5))
    assert (record.key, record.value, record.kind, record.column) == (
        b"P1",
        None,
        RowKind.HELD_BACK,
        "ratio",
    )
    assert builder.record(("P1", 1.0, 2.0, 5)).kind is RowKind.LIVE


def test_the_command_exits_4_when_rows_were_held_back_and_0_once_they_are_fixed(
    kafka: MockKafka, tmp_path: Path
) -> None:
    priced = Priced(tmp_path / "reference.sqlite")
    priced.put("P1", 1, price=INF)
    priced.put("P2", 2)
    env = {f"ENRICH_{name.upper()}": str(value) for name, value in PRICED.items()}
    env["ENRICH_PUBLISH_COLUMNS"] = json.dumps(PRICED["publish_columns"])
    held = run_cli(kafka, tmp_path, **env)
    assert held.returncode == 4, held.stderr
    assert "held back 1 (not published: not_finite 1)" in words(held.stdout)
    assert "rows published 1" in words(held.stdout)
    assert "row 'P1': column 'price' holds inf" in held.stderr
    assert "Traceback" not in held.stderr
    priced.put("P1", 3)
    fixed = run_cli(kafka, tmp_path, **env)
    assert fixed.returncode == 0, fixed.stderr
    assert strict_topic(kafka)["P1"] == {"price": 1.5, "ratio": 0.25, "version": 3}


def test_an_infinite_change_value_fails_the_load_before_the_watermark_moves(
    kafka: MockKafka, tmp_path: Path
) -> None:
    """As the watermark it would end every later incremental load; as a version the dataflow
    cannot order it."""
    priced = Priced(tmp_path / "reference.sqlite")
    priced.put("P1", 1)
    load(kafka, tmp_path, **PRICED)
    priced.put("P2", INF)
    with pytest.raises(ValueError, match="the change column holds inf"):
        load(kafka, tmp_path, **PRICED)
    saved = StateFile(tmp_path / "state" / "publisher.json").load()
    assert saved is not None and saved.watermark == 1
    with pytest.raises(ValueError, match="must be a finite number"):
        version_of(float("nan"))
