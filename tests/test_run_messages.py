"""The dataflow's entry point speaks in sentences: a stop by signal, an unusable SQLite
path and a permanent sink error each say what happened and what to do, without a traceback
where one is not needed, and with the exit status docs/OPERATIONS.md lists."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path

import pytest
from faults import FakeClock
from flowrun import flow_env, init_recovery, start_flow, tail
from test_sink_faults import TABLE, enriched

from dataflows.run_args import recovery_enabled
from sinks.sqlite import SqliteDialect
from sinks.upsert import UpsertSink, restart_note

RUN_TIMEOUT = 60.0
SLOW_DEMO: dict[str, object] = {
    "demo_events": 200_000,
    "demo_references": 200,
    "demo_rate": 2_000,
    "progress_seconds": 0.2,
    "log_level": "INFO",
}
"""A demo run of about 100 s, so a signal always finds it running."""


def rows(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM enriched_events").fetchone()[0])


def wait_for_rows(db: Path, timeout: float = RUN_TIMEOUT) -> None:
    """Until the sink has committed rows, so the stop finds the dataflow at work."""
    deadline = time.monotonic() + timeout
    while True:
        with suppress(sqlite3.Error):
            if db.exists() and rows(db) > 0:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"no rows in {db} after {timeout} s")
        time.sleep(0.1)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("recovery", [False, True], ids=["no_recovery", "recovery"])
def test_a_signal_stops_the_run_with_its_summary_and_exit_0(
    tmp_path: Path, signum: signal.Signals, recovery: bool
) -> None:
    args = init_recovery(tmp_path) if recovery else []
    proc = start_flow(tmp_path, args, flow_env(tmp_path, **SLOW_DEMO), "run.log")
    try:
        wait_for_rows(tmp_path / "enriched.sqlite")
        os.killpg(proc.pid, signum)
        code = proc.wait(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = tail(tmp_path, "run.log")
    assert code == 0, log
    assert f"stopping on {signum.name}: committed output is kept" in log
    if recovery:
        assert "the next run with the same -r directory resumes from the last snapshot" in log
    else:
        assert "run with -r to resume after a stop instead" in log
    assert "run summary (this process)" in log
    assert "rows upserted to sink" in log
    assert "Traceback" not in log
    assert "panicked" not in log
    assert 0 < rows(tmp_path / "enriched.sqlite") < 200_000


@pytest.mark.parametrize("make", ["a file on the way", "a directory"])
def test_an_unusable_sqlite_path_is_one_sentence_and_exit_1(tmp_path: Path, make: str) -> None:
    if make == "a directory":
        path = tmp_path / "enriched.sqlite"
        path.mkdir()
    else:
        (tmp_path / "a_file").write_text("")
        path = tmp_path / "a_file" / "enriched.sqlite"
    env = flow_env(tmp_path, demo_events=100, demo_references=10, sqlite_path=path)
    proc = start_flow(tmp_path, [], env, "run.log")
    code = proc.wait(timeout=RUN_TIMEOUT)
    log = (tmp_path / "run.log").read_text()
    assert code == 1, log
    [line] = log.splitlines()
    assert line.startswith(f"enrich: cannot open SQLite database {path}: ")
    assert "Set ENRICH_SQLITE_PATH to a file where this user can write." in line


def test_a_permanent_sink_error_says_what_a_restart_does_with_and_without_recovery(
    tmp_path: Path,
) -> None:
    (tmp_path / "a_file").write_text("")
    unusable = SqliteDialect(tmp_path / "a_file" / "enriched.sqlite")
    notes = {}
    for recovery in (True, False, None):
        sink = UpsertSink(unusable, TABLE, 1, 10, clock=FakeClock(), recovery=recovery)
        with pytest.raises(sqlite3.OperationalError, match="cannot open SQLite database") as err:
            sink.build_part("sink", "0", None).write_batch([[enriched("e1")]])
        [notes[recovery]] = err.value.__notes__
    assert "same -r directory: it resumes from its last snapshot" in notes[True]
    assert "nothing is lost" not in notes[False]
    assert "This run has no recovery store (-r)" in notes[False]
    assert "are not written" in notes[False]
    assert "With a recovery store (-r) it resumes" in notes[None]
    for recovery, note in notes.items():
        assert note.endswith(restart_note(recovery))


@pytest.fixture
def no_recovery_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("BYTEWAX_RECOVERY_DIRECTORY", raising=False)
    yield


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["dataflows.enrich"], {}, False),
        (["dataflows.enrich", "-r", "rec", "-s", "1", "-b", "0"], {}, True),
        (["dataflows.enrich", "-rrec", "-s", "1", "-b", "0"], {}, True),
        (["dataflows.enrich", "--recovery-directory=rec", "-s", "1"], {}, True),
        (["-w", "2", "dataflows.enrich"], {"BYTEWAX_RECOVERY_DIRECTORY": "rec"}, True),
        (["dataflows.enrich", "-w", "2"], {"BYTEWAX_RECOVERY_DIRECTORY": ""}, False),
    ],
)
def test_recovery_is_read_as_bytewax_run_reads_it(
    argv: list[str], environ: dict[str, str], expected: bool
) -> None:
    assert recovery_enabled(argv, environ) is expected


def test_recovery_is_unknown_outside_bytewax_run(no_recovery_env: None) -> None:
    assert recovery_enabled() is None


def test_a_permanent_sink_error_ends_with_its_sentence_not_a_traceback(tmp_path: Path) -> None:
    """A table the sink cannot write (here one of an earlier version): refused when the
    sink's partitions are built, with the sentence and the note, no traceback."""
    db = tmp_path / "enriched.sqlite"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE enriched_events (event_id TEXT PRIMARY KEY)")
    env = flow_env(tmp_path, demo_events=500, demo_references=50)
    code = start_flow(tmp_path, [], env, "run.log").wait(timeout=RUN_TIMEOUT)
    log = (tmp_path / "run.log").read_text()
    assert code == 1, log
    assert "enrich: stopped: TableOutdated: table 'enriched_events' was created by an " in log
    assert "lacks the column(s) lookup_id" in log
    assert "This run has no recovery store (-r)" in log
    assert "Traceback" not in log
    assert "run summary (this process)" in log


def test_a_permanent_error_mid_run_ends_with_its_sentence_not_a_traceback(tmp_path: Path) -> None:
    """The tables fit, but writing a row fails for good (a trigger naming a table that is
    gone): the dataflow stops at the first batch with the sentence and its note."""
    env = flow_env(tmp_path, demo_events=500, demo_references=50)
    created = subprocess.run(
        [sys.executable, "-m", "commands", "create-tables"], cwd=tmp_path, env=env, check=False
    )
    assert created.returncode == 0
    with closing(sqlite3.connect(tmp_path / "enriched.sqlite")) as conn:
        conn.execute(
            "CREATE TRIGGER broken BEFORE INSERT ON enriched_events "
            "BEGIN INSERT INTO audit_gone VALUES (NEW.event_id); END"
        )
        conn.commit()
    code = start_flow(tmp_path, [], env, "run.log").wait(timeout=RUN_TIMEOUT)
    log = (tmp_path / "run.log").read_text()
    assert code == 1, log
    assert "enrich: stopped: OperationalError: no such table: main.audit_gone" in log
    assert "This run has no recovery store (-r)" in log
    assert "Traceback" not in log
    assert "run summary (this process)" in log
