"""The upsert sink against a real SQLite file: one row per event id, whatever replays."""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.outputs import StatefulSinkPartition
from bytewax.testing import TestingSource, cluster_main, run_main
from prometheus_client import REGISTRY

from operators.records import Event, Joined, MissReason, Outcome, Status
from operators.sink_rows import ARRIVAL_SEQ, SinkRow
from sinks.schema import TableOutdated, create_tables
from sinks.sqlite import SqliteDialect
from sinks.table import EnrichedTable
from sinks.upsert import UpsertSink

TABLE = EnrichedTable(
    name="enriched_events",
    event_columns=(("price", "float"), ("size", "int"), ("urgent", "bool")),
    reference_columns=(("cusip", "str"), ("name", "str")),
    unstored_fields=frozenset({"event_id", "security_id", "ts"}),
)


def event(event_id: str, lookup_id: str = "A", ts: float | None = 1.5, **extra: Any) -> Event:
    fields = {"event_id": event_id, "security_id": lookup_id, "ts": ts, "price": 9.5, **extra}
    return Event(event_id, lookup_id, ts, fields, f"events/0/{event_id}")


def enriched(
    event_id: str, name: str = "Alpha", version: float = 2, waited_ms: float = 0.0, **extra: Any
) -> SinkRow:
    status = Status.LATE_ENRICHED if waited_ms else Status.ENRICHED
    row = ("C1", name, version)
    stages = (Outcome("security", status, None, waited_ms, version),)
    return TABLE.rows.of(
        Joined(
            event(event_id, **extra)._replace(stages=stages), row, version, status, None, waited_ms
        )
    )


def missed(event_id: str, row: tuple[Any, ...] | None = None, **extra: Any) -> SinkRow:
    return TABLE.rows.of(
        Joined(event(event_id, **extra), row, None, Status.LOOKUP_MISS, MissReason.TIMEOUT, 5000.0)
    )


@pytest.fixture
def dialect(tmp_path: Path) -> SqliteDialect:
    return SqliteDialect(tmp_path / "out" / "enriched.sqlite")


def sink(dialect: SqliteDialect, partitions: int = 4, batch_size: int = 100) -> UpsertSink:
    return UpsertSink(dialect, TABLE, partitions, batch_size)


def write(
    dialect: SqliteDialect, *batches: list[SinkRow], part: str = "0", batch_size: int = 100
) -> None:
    partition = sink(dialect, batch_size=batch_size).build_part("out", part, None)
    for batch in batches:
        partition.write_batch([batch])
    partition.close()


def stored(dialect: SqliteDialect) -> dict[str, dict[str, Any]]:
    with closing(sqlite3.connect(dialect.path)) as conn:
        conn.row_factory = sqlite3.Row
        return {row["event_id"]: dict(row) for row in conn.execute(f"SELECT * FROM {TABLE.name}")}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_columns_are_fixed_then_event_then_reference_then_attributes() -> None:
    assert TABLE.columns() == (
        "event_id",
        "lookup_id",
        "event_time",
        "status",
        "miss_reason",
        "waited_ms",
        "ref_version",
        "arrival_seq",
        "price",
        "size",
        "urgent",
        "cusip",
        "name",
        "stages",
        "attributes",
    )


def test_building_twice_creates_the_table_once(dialect: SqliteDialect) -> None:
    create_tables(dialect, TABLE)
    first = sink(dialect).build_part("out", "0", None)
    second = sink(dialect).build_part("out", "0", None)
    first.close()
    second.close()
    with closing(sqlite3.connect(dialect.path)) as conn:
        info = {
            name: (kind, pk)
            for _, name, kind, _, _, pk in conn.execute(f"PRAGMA table_info({TABLE.name})")
        }
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    assert list(info) == list(TABLE.columns())
    assert info["event_id"] == ("TEXT", 1)
    assert info["event_time"] == ("REAL", 0)
    assert info["size"] == ("INTEGER", 0)
    assert info["urgent"] == ("INTEGER", 0)
    assert info["attributes"] == ("TEXT", 0)
    assert mode == "wal"


def test_same_event_twice_in_one_batch_keeps_the_last(dialect: SqliteDialect) -> None:
    write(dialect, [enriched("e1", name="First"), enriched("e2"), enriched("e1", name="Second")])
    rows = stored(dialect)
    assert sorted(rows) == ["e1", "e2"]
    assert rows["e1"]["name"] == "Second"


def test_same_event_in_later_batch_overwrites_every_column(dialect: SqliteDialect) -> None:
    write(dialect, [enriched("e1", venue="X")], [missed("e1")])
    rows = stored(dialect)
    assert len(rows) == 1
    assert rows["e1"]["status"] == "lookup_miss"
    assert rows["e1"]["name"] is None
    assert rows["e1"]["attributes"] is None


def test_values_for_each_status(dialect: SqliteDialect) -> None:
    write(
        dialect,
        [
            enriched("hit", version=3, size=4, urgent=True),
            enriched("late", name="Beta", waited_ms=2500.0),
            missed("miss", ts=None),
            missed("default", row=("UNKNOWN", None, None)),
        ],
    )
    rows = stored(dialect)
    assert rows["hit"] == {
        "event_id": "hit",
        "lookup_id": "A",
        "event_time": 1.5,
        "status": "enriched",
        "miss_reason": None,
        "waited_ms": 0.0,
        "ref_version": 3.0,
        "arrival_seq": 0,
        "price": 9.5,
        "size": 4,
        "urgent": 1,
        "cusip": "C1",
        "name": "Alpha",
        "stages": '[{"lookup":"security","status":"enriched","miss_reason":null,'
        '"waited_ms":0.0,"version":3}]',
        "attributes": None,
    }
    assert rows["late"]["status"] == "late_enriched"
    assert rows["late"]["waited_ms"] == 2500.0
    assert rows["late"]["name"] == "Beta"
    assert rows["late"]["size"] is None
    miss = rows["miss"]
    assert (miss["status"], miss["miss_reason"], miss["waited_ms"]) == (
        "lookup_miss",
        "timeout",
        5000.0,
    )
    assert (miss["event_time"], miss["ref_version"], miss["cusip"], miss["name"]) == (
        None,
        None,
        None,
        None,
    )
    assert (rows["default"]["cusip"], rows["default"]["name"]) == ("UNKNOWN", None)


def test_versions_read_back_exactly(dialect: SqliteDialect) -> None:
    """A REAL column gave 9223372036854775807 back as 9.223372036854776e18."""
    versions = {
        "max": 2**63 - 1,
        "min": -(2**63),
        "scn": 2**53 + 1,
        "fraction": 1_700_000_000.25,
        "small": 0.1,
        "tiny": 1e-130,
    }
    write(dialect, [enriched(name, version=version) for name, version in versions.items()])
    rows = stored(dialect)
    for name, version in versions.items():
        stored_version = rows[name]["ref_version"]
        assert (stored_version, type(stored_version)) == (version, type(version))
        assert json.loads(rows[name]["stages"])[0]["version"] == version
    with closing(sqlite3.connect(dialect.path)) as conn:
        types = {
            name: kind for _, name, kind, *_ in conn.execute("PRAGMA table_info(enriched_events)")
        }
    assert types["ref_version"] == "NUMERIC"


def test_undeclared_fields_are_kept_as_sorted_compact_json(dialect: SqliteDialect) -> None:
    write(dialect, [enriched("e1", venue="XNYS", tags=["a", "b"], nested={"z": 1, "a": None})])
    attributes = stored(dialect)["e1"]["attributes"]
    assert attributes == '{"nested":{"a":null,"z":1},"tags":["a","b"],"venue":"XNYS"}'
    assert json.loads(attributes)["venue"] == "XNYS"


@pytest.mark.parametrize(
    ("changes", "offender"),
    [
        ({"name": "1table"}, "1table"),
        ({"name": 'x"; DROP TABLE t; --'}, 'x"; DROP TABLE t; --'),
        ({"event_columns": (("bad-name", "str"),)}, "bad-name"),
        ({"event_columns": (("a" * 129, "str"),)}, "a" * 129),
        ({"reference_columns": (("_hidden", "str"),)}, "_hidden"),
        ({"event_columns": (("status", "str"),)}, "status"),
        ({"reference_columns": (("Attributes", "str"),)}, "Attributes"),
        ({"reference_columns": (("Price", "float"),)}, "Price"),
        ({"event_columns": (("size", "int"), ("size", "int"))}, "size"),
    ],
)
def test_invalid_or_colliding_identifiers_are_refused_by_name(
    changes: dict[str, Any], offender: str
) -> None:
    spec = {
        "name": "t",
        "event_columns": (("price", "float"),),
        "reference_columns": (("name", "str"),),
        "unstored_fields": frozenset(),
        **changes,
    }
    with pytest.raises(ValueError) as info:
        EnrichedTable(**spec)
    assert repr(offender) in str(info.value)


def test_partition_names_sort_numerically_and_keys_map_to_their_partition(
    dialect: SqliteDialect,
) -> None:
    upsert = sink(dialect, partitions=12)
    names = upsert.list_parts()
    assert names == sorted(names)
    assert len(set(names)) == 12
    for index, name in enumerate(names):
        assert upsert.part_fn(name) == index
        assert upsert.part_fn(str(index)) == index


def test_rows_from_several_partitions_land_in_one_table(dialect: SqliteDialect) -> None:
    upsert = sink(dialect, partitions=3)
    parts = [upsert.build_part("out", name, None) for name in upsert.list_parts()]
    for index, part in enumerate(parts):
        part.write_batch([[enriched(f"p{index}-a")], [enriched(f"p{index}-b")]])
    for part in parts:
        part.close()
    assert sorted(stored(dialect)) == ["p0-a", "p0-b", "p1-a", "p1-b", "p2-a", "p2-b"]


def test_each_chunk_commits_on_its_own(dialect: SqliteDialect) -> None:
    batches = sample("enrich_sink_batches_total")
    late = sample("enrich_sink_rows_total", status="late_enriched")
    unbindable = enriched("bad", size=object())
    with pytest.raises(sqlite3.ProgrammingError):
        write(
            dialect,
            [enriched("e1"), enriched("e2", waited_ms=1.0), enriched("e3"), unbindable],
            batch_size=2,
        )
    assert sorted(stored(dialect)) == ["e1", "e2"]
    assert sample("enrich_sink_batches_total") == batches + 1
    assert sample("enrich_sink_rows_total", status="late_enriched") == late + 1


def test_a_locked_database_is_waited_out(tmp_path: Path) -> None:
    impatient = SqliteDialect(tmp_path / "enriched.sqlite", busy_timeout_seconds=0.01)
    create_tables(impatient, TABLE)
    blocker = sqlite3.connect(impatient.path, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, blocker.commit)
    release.start()
    try:
        write(impatient, [enriched("e1")])
    finally:
        release.join()
        blocker.close()
    assert sorted(stored(impatient)) == ["e1"]


def test_transient_means_busy_or_locked(dialect: SqliteDialect, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "other.sqlite", timeout=0)
    conn.execute("CREATE TABLE t (x)")
    other = sqlite3.connect(tmp_path / "other.sqlite", timeout=0)
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as busy:
        other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as missing:
        other.execute("SELECT * FROM nowhere")
    conn.close()
    other.close()
    assert dialect.is_transient(busy.value)
    assert not dialect.is_transient(missing.value)
    assert not dialect.is_transient(ValueError("database is locked"))


def flow(upsert: UpsertSink, items: Iterable[tuple[str, list[SinkRow]]]) -> Dataflow:
    dataflow = Dataflow("sink_test")
    stream = op.input("in", dataflow, TestingSource(list(items), batch_size=2))
    op.output("out", stream, upsert)
    return dataflow


ITEMS = [
    ("0", [enriched("e0"), enriched("e4", name="Old")]),
    ("1", [enriched("e1"), missed("e5")]),
    ("2", [enriched("e2", waited_ms=10.0)]),
    ("0", [enriched("e4", name="New")]),
    ("3", [enriched("e3", venue="X")]),
]


def test_dataflow_upserts_and_a_replay_changes_nothing(dialect: SqliteDialect) -> None:
    run_main(flow(sink(dialect), ITEMS))
    first = stored(dialect)
    run_main(flow(sink(dialect), ITEMS))
    assert stored(dialect) == first
    assert sorted(first) == ["e0", "e1", "e2", "e3", "e4", "e5"]
    assert first["e4"]["name"] == "New"
    assert first["e5"]["status"] == "lookup_miss"
    assert first["e2"]["status"] == "late_enriched"
    assert first["e3"]["attributes"] == '{"venue":"X"}'


class RecordingSink(UpsertSink):
    """Notes which partition wrote which event, to check Bytewax's routing."""

    def __init__(self, *args: Any, seen: list[tuple[str, str]]) -> None:
        super().__init__(*args)
        self.seen = seen

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> StatefulSinkPartition[list[SinkRow], None]:
        inner = super().build_part(step_id, for_part, resume_state)
        seen = self.seen

        class Recording(StatefulSinkPartition[list[SinkRow], None]):
            def write_batch(self, values: list[list[SinkRow]]) -> None:
                seen.extend((for_part, row.event_id) for group in values for row in group)
                inner.write_batch(values)

            def snapshot(self) -> None:
                return None

            def close(self) -> None:
                inner.close()

        return Recording()


def test_bytewax_routes_each_key_to_its_numbered_partition_across_workers(
    dialect: SqliteDialect,
) -> None:
    seen: list[tuple[str, str]] = []
    upsert = RecordingSink(dialect, TABLE, 12, 3, seen=seen)
    names = upsert.list_parts()
    items = [(str(i % 12), [enriched(f"k{i % 12}-{i}")]) for i in range(48)]
    cluster_main(flow(upsert, items), [], 0, worker_count_per_proc=3)
    assert len(seen) == 48
    for part, event_id in seen:
        assert part == names[int(event_id[1:].split("-")[0])]
    assert len(stored(dialect)) == 48


def arrived(row: SinkRow, seq: int) -> SinkRow:
    binds = row.binds
    return row._replace(binds=(*binds[:ARRIVAL_SEQ], seq, *binds[ARRIVAL_SEQ + 1 :]))


def test_an_earlier_copy_never_overwrites_a_later_one(dialect: SqliteDialect) -> None:
    """Late copies leave the chain by the segments, hits by the join: the sink may see them
    in either order, and keeps the copy that arrived last (`arrival_seq`)."""
    later, earlier = arrived(enriched("e1", name="Later"), 7), arrived(missed("e1"), 5)
    write(dialect, [later], [earlier])
    write(dialect, [arrived(enriched("e2", name="Later"), 9), arrived(missed("e2"), 8)])
    rows = stored(dialect)
    assert (rows["e1"]["name"], rows["e1"]["arrival_seq"]) == ("Later", 7)
    assert (rows["e2"]["name"], rows["e2"]["arrival_seq"]) == ("Later", 9)
    # The same copy again (a replay of a write) and a later copy overwrite.
    write(dialect, [arrived(enriched("e1", name="Again"), 7)])
    write(dialect, [arrived(missed("e2"), 10)])
    rows = stored(dialect)
    assert rows["e1"]["name"] == "Again"
    assert (rows["e2"]["status"], rows["e2"]["arrival_seq"]) == ("lookup_miss", 10)


def test_a_row_written_before_arrival_numbers_is_overwritten(dialect: SqliteDialect) -> None:
    """A table of an earlier version, given the column as docs/OPERATIONS.md says: NULL there."""
    write(dialect, [arrived(missed("e1"), 5)])
    with closing(sqlite3.connect(dialect.path)) as conn:
        conn.execute(f"ALTER TABLE {TABLE.name} DROP COLUMN arrival_seq")  # as it was
        conn.execute(f"ALTER TABLE {TABLE.name} ADD COLUMN arrival_seq INTEGER")  # the upgrade
        conn.commit()
    write(dialect, [arrived(enriched("e1", name="Now"), 1)])
    assert stored(dialect)["e1"]["name"] == "Now"


def test_a_table_of_an_earlier_version_is_refused_at_start_naming_the_missing_column(
    dialect: SqliteDialect,
) -> None:
    """Refused before the first batch, with what to do; never a failure on every write."""
    create_tables(dialect, TABLE)
    with closing(sqlite3.connect(dialect.path)) as conn:  # as an earlier version made it
        conn.execute(f"ALTER TABLE {TABLE.name} DROP COLUMN arrival_seq")
        conn.commit()
    with pytest.raises(TableOutdated, match=r"lacks the column\(s\) arrival_seq.*OPERATIONS"):
        sink(dialect).build_part("out", "0", None)
    with closing(sqlite3.connect(dialect.path)) as conn:
        conn.execute(f"ALTER TABLE {TABLE.name} ADD COLUMN arrival_seq INTEGER")
        conn.commit()
    write(dialect, [enriched("e1")])
    assert list(stored(dialect)) == ["e1"]


def test_on_commit_is_told_each_committed_chunk_after_its_commit(dialect: SqliteDialect) -> None:
    """Benchmarks count rows and their latency at the commit, not when they were handed over."""
    told: list[tuple[list[str], int]] = []

    def committed(rows: Any, at: float) -> None:
        told.append(([row[0] for row in rows], len(stored(dialect))))
        assert at > 0

    upsert = UpsertSink(dialect, TABLE, 1, 2, on_commit=committed)
    partition = upsert.build_part("out", "0", None)
    partition.write_batch([[enriched("e1"), enriched("e2"), enriched("e3")]])
    partition.close()
    assert told == [(["e1", "e2"], 2), (["e3"], 3)]


class _RacingConnection:
    """A connection whose first journal-mode changes meet another process making the same
    change: SQLite then answers "database is locked" at once, without its busy handler."""

    def __init__(self, conn: sqlite3.Connection, refusals: list[str], times: int) -> None:
        self._conn = conn
        self._refusals = refusals
        self._times = times

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql.startswith("PRAGMA journal_mode") and len(self._refusals) < self._times:
            self._refusals.append(sql)
            exc = sqlite3.OperationalError("database is locked")
            exc.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
            raise exc
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@pytest.mark.parametrize(("refusals", "opens"), [(2, True), (1_000, False)])
def test_switching_to_wal_waits_out_another_process_switching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusals: int, opens: bool
) -> None:
    """Two processes of one run starting together: the second waits, within the busy
    timeout, instead of stopping with a traceback; past it, the entry point's check says
    so in a sentence."""
    from dataflows.database import cannot_open
    from dataflows.settings import load_settings

    real = sqlite3.connect
    seen: list[str] = []
    monkeypatch.setattr(
        "sinks.sqlite.sqlite3.connect",
        lambda *args, **kwargs: _RacingConnection(real(*args, **kwargs), seen, refusals),
    )
    quick = functools.partial(SqliteDialect, busy_timeout_seconds=0.3)
    monkeypatch.setattr("dataflows.database.SqliteDialect", quick)
    path = tmp_path / "shared.sqlite"
    problem = cannot_open(load_settings(sqlite_path=path))
    if opens:
        assert problem is None and len(seen) == 2
        with closing(real(path)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    else:
        assert problem is not None and "stayed locked by another process" in problem
        assert "ENRICH_SQLITE_PATH" in problem
