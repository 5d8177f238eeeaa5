"""The sink under faults, on real SQLite through the code path every database shares.

Transient failures are injected (`faults.FlakyDialect`) and waited out on a
fake clock; refused rows are refused by SQLite itself, through a trigger or a
unique index the test adds to the table before the sink writes.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faults import FakeClock, FlakyDialect, Where
from prometheus_client import REGISTRY

from operators.records import Event, Joined, Status
from operators.sink_rows import SinkRow
from sinks.schema import create_tables
from sinks.sqlite import SqliteDialect
from sinks.table import DeadLetterTable, EnrichedTable, Table
from sinks.upsert import DeadLetterRefused, UpsertSink

TABLE = EnrichedTable(
    name="enriched_events",
    event_columns=(("price", "float"), ("size", "int")),
    reference_columns=(("name", "str"),),
    unstored_fields=frozenset({"event_id", "security_id", "ts"}),
)
LETTERS = DeadLetterTable("enrich_dead_letters")


def enriched(event_id: str, price: float = 9.5, name: str = "Alpha") -> SinkRow:
    fields = {"event_id": event_id, "security_id": "A", "ts": 1.5, "price": price, "size": 7}
    event = Event(event_id, "A", 1.5, fields, f"test/event/0/{event_id}")
    return TABLE.rows.of(Joined(event, (name, 3), 3, Status.ENRICHED, None, 0.0))


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def sink(dialect: Any, clock: FakeClock, batch_size: int = 100) -> UpsertSink:
    return UpsertSink(dialect, TABLE, 2, batch_size, dead_letters=LETTERS, clock=clock)


def write(dialect: Any, *batches: list[SinkRow], clock: FakeClock | None = None) -> None:
    partition = sink(dialect, clock or FakeClock()).build_part("out", "1", None)
    try:
        for batch in batches:
            partition.write_batch([batch])
    finally:
        partition.close()


def rows(path: Path, table: str) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(f'SELECT * FROM "{table}" ORDER BY 1')]


@pytest.fixture
def db(tmp_path: Path) -> SqliteDialect:
    return SqliteDialect(tmp_path / "enriched.sqlite")


def add(db: SqliteDialect, statement: str) -> None:
    """Change the tables the sink will find, as a DBA might."""
    create_tables(db, TABLE, LETTERS)
    with closing(sqlite3.connect(db.path)) as conn, conn:
        conn.execute(statement)


@pytest.mark.parametrize("where", ["connect", "write", "commit"])
def test_transient_failures_are_waited_out_and_every_row_lands_once(
    db: SqliteDialect, where: Where, caplog: pytest.LogCaptureFixture
) -> None:
    """Seven failures in a row: the fifth opens the circuit, two probes fail, a third closes it."""
    create_tables(db, TABLE, LETTERS)
    retries = sample("enrich_sink_retries_total")
    flaky = FlakyDialect(db, failures=7, where=where)
    clock = FakeClock()
    batch = [enriched(f"e{i}", price=float(i)) for i in range(250)]
    with caplog.at_level(logging.INFO, logger="enrich.sink"):
        write(flaky, batch[:120], batch[100:], clock=clock)

    stored = rows(db.path, TABLE.name)
    assert [row["event_id"] for row in stored] == sorted(f"e{i}" for i in range(250))
    assert all(row["price"] == float(row["event_id"][1:]) for row in stored)
    assert rows(db.path, LETTERS.name) == []
    assert sample("enrich_sink_retries_total") - retries == 7
    assert flaky.failures == 0
    assert flaky.discarded == (0 if where == "connect" else 7), "a failed connection is let go"
    assert flaky.connections == 2 + (0 if where == "connect" else 7), "and a fresh one taken"
    changes = [r.getMessage() for r in caplog.records if "circuit" in r.getMessage()]
    states = [message.split(": circuit ")[1].split()[0].rstrip(",") for message in changes]
    assert states == ["open", "half-open"] * 3 + ["closed"]
    assert sum(pause == pytest.approx(30.0) for pause in clock.pauses) == 3
    assert sample("enrich_sink_circuit_state", partition="1") == 0


def test_a_refused_row_goes_to_the_dead_letter_table_and_the_rest_commits(
    db: SqliteDialect, caplog: pytest.LogCaptureFixture
) -> None:
    add(
        db,
        "CREATE TRIGGER no_negative BEFORE INSERT ON enriched_events WHEN NEW.price < 0 "
        "BEGIN SELECT RAISE(ABORT, 'negative price refused'); END",
    )
    rejected = sample("enrich_dead_letters_total", reason="db_rejected")
    batch = [enriched("e1"), enriched("e2", price=-1.0, name="Secret Co"), enriched("e3")]
    with caplog.at_level(logging.WARNING, logger="enrich.sink"):
        write(db, batch)

    assert [row["event_id"] for row in rows(db.path, TABLE.name)] == ["e1", "e3"]
    [letter] = rows(db.path, LETTERS.name)
    assert letter["origin"] == "test/event/0/e2"
    assert (letter["reason"], letter["code"]) == ("db_rejected", "SQLITE_CONSTRAINT_TRIGGER")
    assert letter["detail"] == "negative price refused"
    assert (letter["event_id"], letter["lookup_id"]) == ("e2", "A")
    assert json.loads(letter["payload"]) == dict(
        zip(TABLE.columns(), TABLE.params(batch[1]), strict=True)
    )
    assert letter["dead_lettered_at"].endswith("Z")
    assert sample("enrich_dead_letters_total", reason="db_rejected") - rejected == 1
    [warning] = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert warning == (
        "1 of 3 rows refused by the database went to table enrich_dead_letters "
        "(codes: SQLITE_CONSTRAINT_TRIGGER)"
    )
    assert "Secret Co" not in caplog.text and "-1.0" not in caplog.text


def test_replaying_a_batch_with_refused_rows_changes_nothing(db: SqliteDialect) -> None:
    add(db, 'CREATE UNIQUE INDEX one_per_name ON enriched_events ("name")')
    batch = [
        enriched("e1", name="Alpha"),
        enriched("e2", name="Alpha"),
        enriched("e3", name="Beta"),
        enriched("e4", name="Beta"),
        enriched("e5", name="Gamma"),
    ]
    write(db, batch)
    first = rows(db.path, TABLE.name), rows(db.path, LETTERS.name)
    write(db, batch)
    write(db, batch[2:], batch[:2])
    assert (rows(db.path, TABLE.name), rows(db.path, LETTERS.name)) == first
    assert [row["event_id"] for row in first[0]] == ["e1", "e3", "e5"]
    assert [(row["event_id"], row["code"]) for row in first[1]] == [
        ("e2", "SQLITE_CONSTRAINT_UNIQUE"),
        ("e4", "SQLITE_CONSTRAINT_UNIQUE"),
    ]


def test_refused_rows_in_several_chunks_leave_every_other_row_written(db: SqliteDialect) -> None:
    add(
        db,
        "CREATE TRIGGER no_negative BEFORE INSERT ON enriched_events WHEN NEW.price < 0 "
        "BEGIN SELECT RAISE(ABORT, 'negative'); END",
    )
    batch = [enriched(f"e{i:02d}", price=-1.0 if i % 7 == 3 else 1.0) for i in range(40)]
    partition = sink(db, FakeClock(), batch_size=9).build_part("out", "0", None)
    partition.write_batch([batch])
    partition.close()
    refused = {f"e{i:02d}" for i in range(40) if i % 7 == 3}
    assert {row["event_id"] for row in rows(db.path, LETTERS.name)} == refused
    assert {row["event_id"] for row in rows(db.path, TABLE.name)} == {
        f"e{i:02d}" for i in range(40)
    } - refused


def test_a_refused_dead_letter_stops_the_sink_and_commits_nothing(db: SqliteDialect) -> None:
    add(
        db,
        "CREATE TRIGGER refuse_all BEFORE INSERT ON enrich_dead_letters "
        "BEGIN SELECT RAISE(ABORT, 'dead letters refused'); END",
    )
    with closing(sqlite3.connect(db.path)) as conn, conn:
        conn.execute(
            "CREATE TRIGGER no_negative BEFORE INSERT ON enriched_events WHEN NEW.price < 0 "
            "BEGIN SELECT RAISE(ABORT, 'negative'); END"
        )
    permanent = sample("enrich_sink_errors_total", kind="permanent")
    clock = FakeClock()
    with pytest.raises(DeadLetterRefused, match="SQLITE_CONSTRAINT_TRIGGER: dead letters refused"):
        write(db, [enriched("e1"), enriched("e2", price=-5.0)], clock=clock)
    assert rows(db.path, TABLE.name) == [], "e1 was not committed without e2's dead letter"
    assert clock.pauses == []
    assert sample("enrich_sink_errors_total", kind="permanent") - permanent == 1


def test_a_permanent_error_is_raised_at_once_with_what_to_do(db: SqliteDialect) -> None:
    retries = sample("enrich_sink_retries_total")
    clock = FakeClock()
    partition = sink(db, clock).build_part("out", "0", None)
    with closing(sqlite3.connect(db.path)) as conn:
        conn.execute("DROP TABLE enriched_events")
    with pytest.raises(sqlite3.OperationalError, match="no such table") as raised:
        partition.write_batch([[enriched("e1")]])
    partition.close()
    assert clock.pauses == []
    assert sample("enrich_sink_retries_total") == retries
    [note] = raised.value.__notes__
    assert note.startswith("sink partition 0: a permanent database error, not retried;")
    assert "resumes from its last snapshot" in note


@dataclass(frozen=True)
class NoDdl(SqliteDialect):
    """A database where the sink's user may not run DDL: any CREATE fails."""

    def create_statements(self, table: Table) -> list[str]:
        return [f"CREATE TABLE refused_{table.name} (x)", "not even SQL"]


def test_a_sink_whose_tables_exist_runs_no_ddl(db: SqliteDialect) -> None:
    """Tables a DBA made are used as they are, with no CREATE the sink's user may lack."""
    no_ddl = NoDdl(db.path)
    with pytest.raises(sqlite3.OperationalError, match="syntax error"):
        write(no_ddl, [enriched("e1")])
    create_tables(db, TABLE, LETTERS)
    write(no_ddl, [enriched("e1")])
    assert [row["event_id"] for row in rows(db.path, TABLE.name)] == ["e1"]
