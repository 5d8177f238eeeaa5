"""The real entry point, as subprocesses: crashes, resumes and more workers change nothing.

Every run is `python -m bytewax.run dataflows.enrich` in its own directory, with
a miss timeout far beyond the run so no wall-clock timeout fires and the final
table depends only on the demo plan. Tables are compared on every column
except `waited_ms` and `arrival_seq`, which come from the wall clock and so
differ between any two runs; dead-letter files are compared as multisets of lines without their
`dead_lettered_at` wall-clock stamp, because workers may write them in any order.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flowrun import (
    ResumePoint,
    init_recovery,
    kill_group,
    resume_point,
    start_flow,
    steady_column,
    tail,
)
from flowrun import flow_env as run_env

EVENTS = 20_000
REFERENCES = 2_000
PACED_RATE = 5_000
"""Events/s for runs that get killed: slow enough to stop them mid-stream."""
RUN_TIMEOUT = 120.0
WALL_CLOCK_COLUMNS = frozenset({"waited_ms", "arrival_seq"})

"""Columns that measure elapsed time, so no two runs agree on them."""

Row = tuple[Any, ...]


@dataclass(frozen=True)
class Outcome:
    """What a finished run left behind, in comparable form."""

    table: list[Row]
    dead_letters: Counter[str]


def flow_env(work: Path, **settings: object) -> dict[str, str]:
    """This file's demo size, with a miss timeout far beyond any run."""
    defaults = {"demo_events": EVENTS, "demo_references": REFERENCES, "miss_timeout_seconds": 3600}
    return run_env(work, **{**defaults, **settings})


def finish(procs: Sequence[tuple[subprocess.Popen[bytes], str]], work: Path) -> None:
    """Wait for every process to exit 0; kill the rest if one fails or hangs."""
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        for proc, log in procs:
            code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            assert code == 0, f"{log} exited {code}:\n{tail(work, log)}"
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                kill_group(proc)


def run_flow(work: Path, *args: str) -> None:
    """Run the dataflow, unpaced, to its end and require a clean exit."""
    finish([(start_flow(work, args, flow_env(work), "run.log"), "run.log")], work)


def read_table(db: Path) -> list[Row]:
    """The final table, ordered by event id, without the wall-clock columns."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        names = [row[1] for row in conn.execute('PRAGMA table_info("enriched_events")')]
        kept = ", ".join(steady_column(name) for name in names if name not in WALL_CLOCK_COLUMNS)
        # Callers index rows by position: event id first, status fourth.
        assert names[0] == "event_id" and names[3] == "status" and "waited_ms" in names, names
        return conn.execute(f'SELECT {kept} FROM "enriched_events" ORDER BY 1').fetchall()


def count_rows(db: Path) -> int:
    """Rows written so far by a live run; 0 while the file or table does not exist yet."""
    if not db.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)) as conn:
            return conn.execute('SELECT count(*) FROM "enriched_events"').fetchone()[0]
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "no such table" in str(exc) or "unable to open" in str(exc):
            return 0
        raise


def dead_letters(path: Path) -> Counter[str]:
    """Dead-letter lines as a multiset, each without its wall-clock stamp."""
    lines: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        del record["dead_lettered_at"]
        lines[json.dumps(record, sort_keys=True)] += 1
    return lines


def outcome(work: Path) -> Outcome:
    return Outcome(read_table(work / "enriched.sqlite"), dead_letters(work / "dead_letters.jsonl"))


def assert_same_outcome(found: Outcome, expected: Outcome) -> None:
    """Row for row, naming the differing event ids rather than dumping 20,000 rows."""
    ids = [row[0] for row in found.table]
    assert len(ids) == len(set(ids)), "duplicate event ids"
    if found.table != expected.table:
        mine = {row[0]: row for row in found.table}
        theirs = {row[0]: row for row in expected.table}
        diff = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        shown = [(mine.get(k), theirs.get(k)) for k in diff[:10]]
        pytest.fail(f"{len(diff)} rows differ (found, expected), first ones: {shown}")
    assert found.dead_letters == expected.dead_letters


def kill_when(proc: subprocess.Popen[bytes], db: Path, rows: int, work: Path, log: str) -> int:
    """SIGKILL the run's group once the table holds `rows` rows; the count at the kill."""
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while count_rows(db) < rows:
            assert proc.poll() is None, f"{log} ended before the kill:\n{tail(work, log)}"
            assert time.monotonic() < deadline, f"{log} never wrote {rows} rows"
            time.sleep(0.02)
    finally:
        kill_group(proc)
    return count_rows(db)


def resume_epochs(recovery: Path) -> list[int]:
    with closing(sqlite3.connect(f"file:{recovery / 'part-0.sqlite3'}?mode=ro", uri=True)) as conn:
        return [epoch for (epoch,) in conn.execute("SELECT resume_epoch FROM exs ORDER BY ex_num")]


def crash(work: Path, args: Sequence[str], rows: int, log: str) -> tuple[ResumePoint, set[str]]:
    """A paced run killed mid-stream: where it will resume and the event ids it had written."""
    db = work / "enriched.sqlite"
    proc = start_flow(work, args, flow_env(work, demo_rate=PACED_RATE), log)
    seen = kill_when(proc, db, rows, work, log)
    assert seen < EVENTS * 0.75, f"killed too late ({seen} rows), nothing left to resume"
    return resume_point(work / "recovery"), {row[0] for row in read_table(db)}


def held_back(point: ResumePoint, written: set[str], baseline: Outcome) -> set[str]:
    """Late events the snapshot still held and nobody had written when the run died.

    Their records lie before the resume offset of their source partition, so
    the resumed source never reads them again: only the restored join state
    can bring them to the table.
    """
    for waiting in point.pending:
        _, _, part, index = waiting.event.origin.split("/")
        assert int(index) < point.offsets[part], waiting.event.origin
    status = {row[0]: row[3] for row in baseline.table}
    return {
        waiting.event.event_id
        for waiting in point.pending
        if waiting.event.event_id not in written
        and status.get(waiting.event.event_id) == "late_enriched"
    }


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """One uninterrupted single-worker run that every other run must reproduce."""
    work = tmp_path_factory.mktemp("baseline")
    run_flow(work, "-w", "1")
    result = outcome(work)
    statuses = Counter(row[3] for row in result.table)
    # Guard against a vacuous comparison: every outcome the tests rely on occurs.
    assert statuses["enriched"] and statuses["late_enriched"] and statuses["lookup_miss"]
    assert sum(result.dead_letters.values()) > 0
    return result


def test_crashing_twice_and_resuming_matches_an_uninterrupted_run(
    baseline: Outcome, tmp_path: Path
) -> None:
    """Killed twice mid-stream, resumed each time: same rows, same dead letters, no duplicates.

    Each kill must leave late events waiting in the snapshot that the killed
    run had not written, so the final rows prove that the restored pending
    state (not a re-read of the source) released them.
    """
    args = init_recovery(tmp_path)
    first, written = crash(tmp_path, args, 3_000, "crash1.log")
    held_first = held_back(first, written, baseline)
    second, written = crash(tmp_path, args, 9_000, "crash2.log")
    held_second = held_back(second, written, baseline)
    run_flow(tmp_path, *args)

    assert resume_epochs(tmp_path / "recovery") == [1, first.epoch, second.epoch]
    assert 1 < first.epoch < second.epoch
    assert held_first, "the first kill left no unwritten late event in the snapshot"
    assert held_second, "the second kill left no unwritten late event in the snapshot"
    final = outcome(tmp_path)
    assert_same_outcome(final, baseline)
    late = {row[0] for row in final.table if row[3] == "late_enriched"}
    assert held_first | held_second <= late


def test_resuming_a_one_worker_crash_on_two_workers_matches(
    baseline: Outcome, tmp_path: Path
) -> None:
    """Recovery survives a change of worker count: state moves to whichever worker owns it."""
    args = init_recovery(tmp_path)
    point, written = crash(tmp_path, [*args, "-w", "1"], 4_000, "crash.log")
    assert held_back(point, written, baseline)
    run_flow(tmp_path, *args, "-w", "2")
    assert resume_epochs(tmp_path / "recovery") == [1, point.epoch]
    assert_same_outcome(outcome(tmp_path), baseline)


def test_two_workers_in_one_process_match_one_worker(baseline: Outcome, tmp_path: Path) -> None:
    """Partitions and shards spread over workers; per-key order, and so the result, holds."""
    run_flow(tmp_path, "-w", "2")
    assert_same_outcome(outcome(tmp_path), baseline)


def test_two_processes_on_loopback_match_one_worker(baseline: Outcome, tmp_path: Path) -> None:
    """A two-process cluster shares one SQLite file and one dead-letter file correctly."""
    addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(2))
    env = flow_env(tmp_path)
    procs = [
        (start_flow(tmp_path, ["-i", str(i), "-a", addresses], env, f"proc{i}.log"), f"proc{i}.log")
        for i in range(2)
    ]
    finish(procs, tmp_path)
    assert_same_outcome(outcome(tmp_path), baseline)
