"""Sink writes on writer threads (`sinks.writer`, `ENRICH_SINK_OVERLAP`): same rows, same errors.

An epoch must not be recorded before its rows are committed, and a failed
write must stop the dataflow exactly as a failure in `write_batch` did.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main
from test_sinks import TABLE, enriched, stored

from sinks.sqlite import SqliteDialect
from sinks.upsert import UpsertSink


@dataclass(frozen=True)
class WatchedDialect(SqliteDialect):
    """SQLite that notes the thread of every write and can hold writes until released."""

    threads: list[str] = None  # type: ignore[assignment]
    gate: threading.Event = None  # type: ignore[assignment]

    def write(self, conn: sqlite3.Connection, table: Any, rows: Any) -> Any:
        self.threads.append(threading.current_thread().name)
        assert self.gate.wait(10), "the test never opened the gate"
        return super().write(conn, table, rows)


@dataclass(frozen=True)
class ParallelDialect(WatchedDialect):
    single_writer: ClassVar[bool] = False


def watched(path: Path, kind: type[WatchedDialect] = WatchedDialect) -> WatchedDialect:
    gate = threading.Event()
    gate.set()
    return kind(path / "out.sqlite", threads=[], gate=gate)


def broken(path: Path) -> SqliteDialect:
    """A table the sink accepts whose every insert fails for good (a trigger on a lost table)."""
    dialect = SqliteDialect(path / "broken.sqlite")
    UpsertSink(dialect, TABLE, 1, 10).build_part("out", "0", None).close()
    with closing(sqlite3.connect(dialect.path)) as conn:
        conn.execute(
            f"CREATE TRIGGER broken BEFORE INSERT ON {TABLE.name} "
            "BEGIN INSERT INTO audit_gone VALUES (NEW.event_id); END"
        )
        conn.commit()
    return dialect


def test_write_batch_returns_before_the_commit_and_snapshot_waits_for_it(tmp_path: Path) -> None:
    dialect = watched(tmp_path)
    dialect.gate.clear()
    partition = UpsertSink(dialect, TABLE, 1, 100, overlap=True).build_part("out", "0", None)
    partition.write_batch([[enriched("e1")]])  # returns while the writer waits at the gate
    assert not stored(dialect)
    dialect.gate.set()
    partition.snapshot()
    assert list(stored(dialect)) == ["e1"]
    partition.close()


def test_batches_of_a_partition_commit_in_order(tmp_path: Path) -> None:
    dialect = watched(tmp_path)
    partition = UpsertSink(dialect, TABLE, 1, 2, overlap=True).build_part("out", "0", None)
    for name in ("First", "Second", "Third"):
        partition.write_batch([[enriched("e1", name=name), enriched("e2", name=name)]])
    partition.snapshot()
    partition.close()
    assert {row["name"] for row in stored(dialect).values()} == {"Third"}


def test_sqlite_partitions_share_one_writer_thread_other_databases_one_each(
    tmp_path: Path,
) -> None:
    """SQLite takes one writer at a time; partitions on threads of their own would only
    queue on its lock. A database with parallel sessions gets a thread per partition."""
    for kind, expected in ((WatchedDialect, {"enrich-sink-all"}), (ParallelDialect, None)):
        dialect = watched(tmp_path / kind.__name__, kind)
        upsert = UpsertSink(dialect, TABLE, 3, 100, overlap=True)
        partitions = [upsert.build_part("out", name, None) for name in upsert.list_parts()]
        for index, partition in enumerate(partitions):
            partition.write_batch([[enriched(f"e{index}")]])
        for partition in partitions:
            partition.snapshot()
            partition.close()
        names = set(dialect.threads)
        if expected is None:
            expected = {f"enrich-sink-{name}" for name in upsert.list_parts()}
        assert names == expected
        assert len(stored(dialect)) == 3


def test_a_permanent_failure_is_raised_by_the_next_call_and_close_does_not_raise_again(
    tmp_path: Path,
) -> None:
    partition = UpsertSink(broken(tmp_path), TABLE, 1, 10, overlap=True).build_part(
        "out", "0", None
    )
    partition.write_batch([[enriched("e1")]])
    with pytest.raises(sqlite3.OperationalError, match="audit_gone") as raised:
        partition.snapshot()
    assert any("a permanent database error, not retried" in note for note in raised.value.__notes__)
    partition.close()  # Bytewax closes while stopping: a second error there aborts the process


def test_a_failure_in_the_last_batch_of_the_input_stops_the_dataflow(tmp_path: Path) -> None:
    """Nothing follows the last batch but the epoch's close: the failure must surface there,
    not vanish when the input ends."""
    flow = Dataflow("overlap")
    rows = op.input("in", flow, TestingSource([("0", [enriched("e1")])]))
    op.output("out", rows, UpsertSink(broken(tmp_path), TABLE, 1, 10, overlap=True))
    with pytest.raises(Exception) as raised:
        run_main(flow)
    chain: BaseException | None = raised.value
    messages = []
    while chain is not None:
        messages.append(str(chain))
        chain = chain.__cause__ or chain.__context__
    assert any("audit_gone" in message for message in messages)


def test_the_dataflow_writes_the_same_rows_with_and_without_overlap(tmp_path: Path) -> None:
    batches = [(str(i % 4), [enriched(f"e{i}", name=f"n{i}")]) for i in range(200)]
    results = []
    for overlap in (False, True):
        dialect = SqliteDialect(tmp_path / f"{overlap}.sqlite")
        flow = Dataflow("same")
        rows = op.input("in", flow, TestingSource(batches, batch_size=7))
        op.output("out", rows, UpsertSink(dialect, TABLE, 4, 5, overlap=overlap))
        run_main(flow)
        results.append({key: row["name"] for key, row in stored(dialect).items()})
    assert results[0] == results[1]
    assert len(results[1]) == 200
