"""Recovery-store inspection: exact numbers from hand-built stores, safety, and a live run.

Hand-built stores use Bytewax's own `init_db_dir` for the schema and
`pickle.dumps` for the snapshots, as Bytewax writes them, so every expected
number is known by construction. One test inspects the store of a real
dataflow while it runs and again after it ends.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import pickle
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pytest
from bytewax.recovery import init_db_dir
from flowrun import ROOT, flow_env
from hypothesis import given
from hypothesis import strategies as st

from dataflows.flow import demo_source
from dataflows.settings import load_settings
from operators.enrichment import HELD, Pending
from operators.records import Event
from recovery_store.cli import main
from recovery_store.report import ROW_NOTE, build_key_report, build_report
from recovery_store.store import read_store
from recovery_store.unpickle import RefusedPickle, loads
from sources.demo import EXCHANGES, build_plan

TIMEOUT = 5.0
ENRICH, INPUT, SINK = "enrich.enrich", "enrich.input", "enrich.sink"
RUN_TIMEOUT = 120.0


def waiting(lookup_id: str, event_id: str, arrived: float) -> Pending:
    fields = {"event_id": event_id, "security_id": lookup_id, "price": 1.5, "ts": arrived - 1}
    event = Event(event_id, lookup_id, arrived - 1, fields, f"demo/event/0/{event_id}")
    return Pending(event, arrived, arrived + TIMEOUT)


def new_store(directory: Path, partitions: int) -> Path:
    directory.mkdir(mode=0o700)  # whatever the umask: a store others can write is refused
    init_db_dir(directory, partitions)
    return directory


def insert(directory: Path, part: int, table: str, *rows: tuple[Any, ...]) -> None:
    columns = {
        "exs": "ex_num, worker_count, resume_epoch",
        "fronts": "ex_num, worker_index, worker_frontier",
        "commits": "part_index, commit_epoch",
        "snaps": "step_id, state_key, snap_epoch, ser_change",
    }[table]
    marks = ", ".join("?" * len(rows[0]))
    with closing(sqlite3.connect(directory / f"part-{part}.sqlite3")) as conn:
        conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
        conn.commit()


def snap(step: str, key: str, epoch: int, state: object) -> tuple[str, str, int, bytes]:
    return step, key, epoch, pickle.dumps(state)


A1, A2, B1, C1 = (
    waiting("A", "e1", 1000.0),
    waiting("A", "e2", 1001.0),
    waiting("B", "e3", 1002.0),
    waiting("C", "e4", 999.0),
)
SNAPS_0 = [
    snap(INPUT, "0", 3, 100),
    snap(INPUT, "0", 6, 250),
    snap(INPUT, "0", 8, 400),
    snap(INPUT, "1", 2, 70),
    (INPUT, "1", 6, None),
    snap(SINK, "0", 6, None),
]
SNAPS_1 = [
    snap(ENRICH, "00", 6, [A1, A2, B1]),
    snap(ENRICH, "01", 4, [C1]),
    snap(ENRICH, "01", 7, []),
    snap(ENRICH, "02", 6, []),
]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Two executions over two partitions; the second one's slowest worker finished epoch 7.

    Epoch-7 and later snapshots are newer than the resume epoch, so a restart
    skips them; input key 1 was discarded at epoch 6.
    """
    directory = new_store(tmp_path / "recovery", 2)
    insert(directory, 1, "exs", (0, 2, 1))
    insert(directory, 0, "exs", (1, 2, 4))
    insert(directory, 0, "fronts", (0, 0, 5), (1, 0, 9))
    insert(directory, 1, "fronts", (0, 1, 4), (1, 1, 7))
    insert(directory, 0, "commits", (0, 6))
    insert(directory, 1, "commits", (1, 6))
    insert(directory, 0, "snaps", *SNAPS_0)
    insert(directory, 1, "snaps", *SNAPS_1)
    return directory


def run_main(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([*map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def main_json(capsys: pytest.CaptureFixture[str], *args: object) -> dict[str, Any]:
    code, out, err = run_main(capsys, *args, "--json")
    assert (code, err) == (0, "")
    return json.loads(out, parse_constant=reject)


def reject(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


def pick(rows: list[dict[str, Any]], *names: str) -> list[tuple[Any, ...]]:
    return [tuple(row[name] for name in names) for row in rows]


def blob_bytes(*rows: tuple[str, str, int, bytes | None]) -> int:
    return sum(len(row[3] or b"") for row in rows)


def run_module(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m recovery_store`, the entry point an operator runs."""
    return subprocess.run(
        [sys.executable, "-m", "recovery_store", str(directory), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_partitions_executions_frontiers_and_the_resume_epoch(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = main_json(capsys, store)
    assert pick(report["partitions"], "index", "file", "part_count", "commit_epoch") == [
        (0, "part-0.sqlite3", 2, 6),
        (1, "part-1.sqlite3", 2, 6),
    ]
    assert pick(report["partitions"], "snapshots", "snapshot_bytes") == [
        (len(SNAPS_0), blob_bytes(*SNAPS_0)),
        (len(SNAPS_1), blob_bytes(*SNAPS_1)),
    ]
    assert pick(report["executions"], "ex_num", "worker_count", "resume_epoch", "frontiers") == [
        (0, 2, 1, {"0": 5, "1": 4}),
        (1, 2, 4, {"0": 9, "1": 7}),
    ]
    assert (report["next_execution"], report["resume_epoch"]) == (2, 7)
    assert report["problems"] == []


def test_steps_count_every_stored_snapshot_and_resume_from_the_newest_before_the_epoch(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = {step["step_id"]: step for step in main_json(capsys, store)["steps"]}
    assert sorted(steps) == [ENRICH, INPUT, SINK]
    inputs = steps[INPUT]
    assert (inputs["snapshots"], inputs["bytes"], inputs["discards"]) == (
        5,
        blob_bytes(*SNAPS_0[:5]),
        1,
    )
    assert (inputs["oldest_epoch"], inputs["newest_epoch"]) == (2, 8)
    assert inputs["keys_at_resume"] == 1
    assert inputs["positions"] == {"0": 250}
    assert inputs["bytes_at_resume"] == len(SNAPS_0[1][3])
    enrich = steps[ENRICH]
    assert (enrich["snapshots"], enrich["oldest_epoch"], enrich["newest_epoch"]) == (4, 4, 7)
    assert enrich["keys_at_resume"] == 3
    assert enrich["kinds_at_resume"] == {"pending": 3}
    assert enrich["bytes_at_resume"] == blob_bytes(SNAPS_1[0], SNAPS_1[1], SNAPS_1[3])
    assert steps[SINK]["kinds_at_resume"] == {"none": 1}


def test_enrichment_state_ranks_lookup_ids_by_pending_events(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    enrichment = main_json(capsys, store, "--top", "2")["enrichment"]
    assert enrichment["step_ids"] == [ENRICH]
    assert (enrichment["shards_held"], enrichment["shards_with_pending"]) == (3, 2)
    assert (enrichment["events_pending"], enrichment["lookup_ids_pending"]) == (4, 3)
    assert enrichment["oldest_arrival"] == C1.arrived
    assert (enrichment["earliest_deadline"], enrichment["latest_deadline"]) == (
        C1.deadline,
        B1.deadline,
    )
    assert enrichment["most_pending"] == [
        {"lookup": "enrich", "lookup_id": "A", "shard": "00", "events": 2, "segments": 0,
         "earliest_deadline": A1.deadline},
        {"lookup": "enrich", "lookup_id": "B", "shard": "00", "events": 1, "segments": 0,
         "earliest_deadline": B1.deadline},
    ]  # fmt: skip


def test_key_shows_its_pending_events_and_says_rows_are_not_in_snapshots(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    detail = main_json(capsys, store, "--key", "A")
    assert detail["resume_epoch"] == 7
    assert pick(detail["pending"], "event_id", "shard", "arrived", "deadline") == [
        ("e1", "00", A1.arrived, A1.deadline),
        ("e2", "00", A2.arrived, A2.deadline),
    ]
    assert detail["pending"][0]["fields"] == A1.event.fields
    assert detail["note"] == ROW_NOTE

    code, text, _ = run_main(capsys, store, "--key", "C")
    assert code == 0
    assert "1 pending events" in text
    assert "1970-01-01T00:16:39.000+00:00" in text, "arrival as a UTC timestamp"
    assert "1970-01-01T00:16:44.000+00:00" in text, "deadline = arrival + timeout"
    assert "row and version: not available" in text and ROW_NOTE in text

    code, text, _ = run_main(capsys, store, "--key", "Z")
    assert code == 0 and "no pending events" in text


def test_text_report_is_a_table_for_people(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text, err = run_main(capsys, store)
    assert (code, err) == (0, "")
    lines = text.splitlines()
    assert "next execution 2 resumes at epoch 7" in lines
    assert lines.count("partitions") == 1 and lines.count("executions") == 1
    input_line = next(line for line in lines if line.lstrip().startswith(INPUT))
    assert input_line.split() == [INPUT, "5", str(blob_bytes(*SNAPS_0[:5])), "1", "2-8", "1",
                                  str(len(SNAPS_0[1][3])), "0=250"]  # fmt: skip
    assert "events pending 4 for 3 lookup ids" in text
    top = lines[lines.index("lookup ids with the most pending events") + 2]
    assert top.split()[:5] == ["enrich", "A", "00", "0", "2"]


def test_a_worker_without_frontier_holds_the_resume_at_its_execution_start(
    tmp_path: Path,
) -> None:
    directory = new_store(tmp_path / "recovery", 1)
    insert(directory, 0, "exs", (0, 3, 4))
    insert(directory, 0, "fronts", (0, 0, 9), (0, 1, 7))
    report = build_report(read_store(directory))
    assert (report.next_execution, report.resume_epoch) == (1, 4)


def test_events_held_for_the_reference_source_have_no_deadline_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = new_store(tmp_path / "recovery", 1)
    insert(directory, 0, "exs", (0, 1, 1))
    insert(directory, 0, "fronts", (0, 0, 3))
    held = waiting("A", "e1", 1000.0)._replace(deadline=HELD)
    insert(directory, 0, "snaps", snap(ENRICH, "00", 2, [held, A2]))

    enrichment = main_json(capsys, directory)["enrichment"]
    assert (enrichment["events_pending"], enrichment["events_held"]) == (2, 1)
    assert enrichment["earliest_deadline"] == enrichment["latest_deadline"] == A2.deadline
    assert enrichment["most_pending"][0]["earliest_deadline"] == A2.deadline
    detail = main_json(capsys, directory, "--key", "A")
    assert [p["deadline"] for p in detail["pending"]] == [None, A2.deadline]
    code, text, _ = run_main(capsys, directory, "--key", "A")
    assert code == 0
    assert "1970-01-01T00:16:40.000+00:00  held" in text


def test_a_fresh_store_has_no_execution_and_starts_at_epoch_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = new_store(tmp_path / "recovery", 2)
    code, text, _ = run_main(capsys, directory)
    assert code == 0
    assert "next execution 0 resumes at epoch 1" in text
    assert "none yet" in text
    assert "enrichment state: none loaded on resume" in text


class Exploit:
    """Pickles into a call of `os.system`, as a crafted snapshot would."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


def test_a_crafted_snapshot_is_refused_and_runs_nothing(store: Path, tmp_path: Path) -> None:
    """Through the real entry point; the same bytes given to plain pickle do run the command."""
    marker = tmp_path / "pwned"
    crafted = pickle.dumps([Exploit(f"touch {shlex.quote(str(marker))}")])
    insert(store, 1, "snaps", (ENRICH, "03", 5, crafted))

    result = run_module(store)
    assert result.returncode == 2
    assert f"refused to load {os.system.__module__}.system" in result.stderr
    assert "'enrich.enrich' key '03' epoch 5" in result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists()

    pickle.loads(crafted)  # the control: this is a working exploit
    assert marker.exists()


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("subprocess", "Popen"),
        ("operators.enrichment", "ShardEnricher"),
        ("operators.records", "RawRecord"),
    ],
)
def test_only_the_state_types_may_be_named(module: str, name: str) -> None:
    """Every protocol names globals its own way (GLOBAL, STACK_GLOBAL); each one is refused.

    Protocols before 3 spell some modules the Python 2 way (`__builtin__`).
    """
    named = getattr(importlib.import_module(module), name)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        spelled = module if protocol >= 3 else r"[\w.]+"
        with pytest.raises(RefusedPickle, match=rf"refused to load {spelled}\.{name}: "):
            loads(pickle.dumps(named, protocol=protocol))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(
    st.lists(
        st.builds(
            lambda lookup_id, event_id, time, fields: Pending(
                Event(event_id, lookup_id, time, fields, "demo/event/0/1"), time, time + TIMEOUT
            ),
            st.text(min_size=1),
            st.text(),
            st.floats(0, 4e9),
            st.dictionaries(st.text(), json_values, max_size=4),
        ),
        max_size=5,
    )
)
def test_every_enrichment_snapshot_decodes_to_what_was_pickled(states: list[Pending]) -> None:
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        assert loads(pickle.dumps(states, protocol=protocol)) == states


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)


def non_bytewax_sqlite(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE snaps (x)")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: None, "does not exist"),
        (lambda d: write_file(d, b"not a directory"), "is not a directory"),
        (lambda d: d.mkdir(mode=0o700), "holds no recovery partitions"),
        (
            lambda d: write_file(d / "part-0.sqlite3", os.urandom(4096)),
            "cannot be read as a recovery partition: file is not a database",
        ),
        (
            lambda d: non_bytewax_sqlite(d / "part-0.sqlite3"),
            "is not a Bytewax recovery partition (no table commits, exs, fronts, parts)",
        ),
    ],
    ids=["missing", "file", "empty", "corrupt", "foreign"],
)
def test_unreadable_stores_get_a_message_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str
) -> None:
    directory = tmp_path / "recovery"
    make(directory)
    code, out, err = run_main(capsys, directory)
    assert code == 2 and out == ""
    assert err.startswith("enrich recovery: ") and message in err
    assert "Traceback" not in err


def test_a_truncated_snapshot_is_named_not_a_traceback(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    insert(store, 0, "snaps", (INPUT, "2", 6, pickle.dumps(12345)[:-3]))
    code, out, err = run_main(capsys, store)
    assert code == 2 and out == ""
    assert "'enrich.input' key '2' epoch 6 (partition 0) cannot be decoded" in err


def test_a_missing_partition_is_a_problem_but_the_rest_is_shown(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (store / "part-1.sqlite3").unlink()
    code, text, _ = run_main(capsys, store)
    assert code == 1
    assert "PROBLEM: partitions [1] of 2 are missing" in text
    assert "part-0.sqlite3" in text


def test_a_partition_collected_past_the_resume_epoch_is_a_problem(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with closing(sqlite3.connect(store / "part-1.sqlite3")) as conn:
        conn.execute("UPDATE commits SET commit_epoch = 8")
        conn.commit()
    code, text, _ = run_main(capsys, store)
    assert code == 1
    assert "PROBLEM: partitions [1] were garbage-collected past the resume epoch 7" in text


def test_a_running_dataflow_is_inspected_without_disturbing_it(tmp_path: Path) -> None:
    """Mid-run the pending events sit behind their partition's offset; at the end none remain.

    One partition: a file is read in one transaction, so what it shows is
    what a restart at that moment would load.
    """
    sizes = {"demo_events": 6_000, "demo_references": 600}
    recovery = new_store(tmp_path / "recovery", 1)
    env = flow_env(tmp_path, miss_timeout_seconds=3_600, demo_rate=1_500, **sizes)
    recovery_args = ["-r", str(recovery), "-s", "0", "-b", "0"]
    with open(tmp_path / "run.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "dataflows.enrich", *recovery_args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not build_report(store := read_store(recovery)).enrichment.events_pending:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3_000:]
            assert time.monotonic() < deadline, "no pending events were ever snapshotted"
            time.sleep(0.05)
        live = run_module(recovery, "--json")
        assert live.returncode == 0, live.stderr
        assert json.loads(live.stdout)["executions"][0]["worker_count"] == 1

        report = build_report(store)
        positions = next(s for s in report.steps if s.step_id == INPUT).positions
        top = report.enrichment.most_pending[0]
        detail = build_key_report(store, top.lookup_id)
        assert len(detail.pending) == top.events
        for event in detail.pending:
            _, _, part, index = event.origin.split("/")
            assert int(index) < positions[part], "pending events were read before the offset"
        assert proc.wait(timeout=RUN_TIMEOUT) == 0, (tmp_path / "run.log").read_text()[-3_000:]
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    done = build_report(read_store(recovery))
    plan = build_plan(demo_source(load_settings(**sizes)).cfg)
    assert [(e.ex_num, e.worker_count) for e in done.executions] == [(0, 1)]
    assert done.enrichment.events_pending == 0
    settings = load_settings()
    assert done.enrichment.step_ids == sorted(
        f"enrich.enrich_{lookup.name}" for lookup in settings.lookups
    )
    assert done.enrichment.shards_held == settings.shards * len(settings.lookups)
    inputs = next(step for step in done.steps if step.step_id == INPUT)
    assert inputs.positions == {
        **{f"{i}": len(records) for i, records in enumerate(plan.partitions)},
        "exchanges": len(EXCHANGES),
    }, "every source partition resumes at its end"


GOOD = waiting("G", "g1", 1000.0)
BAD_CONTENT = {
    "string time": A1._replace(arrived="yesterday"),
    "list as lookup id": A1._replace(event=A1.event._replace(lookup_id=["A"])),
    "huge time": A1._replace(deadline=1e300),
    "nan time": A1._replace(arrived=math.nan),
    "nan field": A1._replace(event=A1.event._replace(fields={"price": math.nan})),
    "huge event time": A1._replace(event=A1.event._replace(event_time=10**30)),
}


@pytest.mark.parametrize("bad", BAD_CONTENT.values(), ids=BAD_CONTENT.keys())
def test_bad_content_of_an_allowed_type_is_named_invalid_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: Pending
) -> None:
    directory = new_store(tmp_path / "recovery", 1)
    insert(directory, 0, "exs", (0, 1, 1))
    insert(directory, 0, "fronts", (0, 0, 3))
    insert(directory, 0, "snaps", snap(ENRICH, "00", 2, [bad, GOOD]))

    code, text, err = run_main(capsys, directory)
    assert (code, err) == (1, "")
    assert "PROBLEM: invalid: snapshot of step 'enrich.enrich' key '00' epoch 2" in text
    assert "waiting event 0: " in text and "left out of the figures" in text
    assert "events pending 1 for 1 lookup ids" in text, "the valid event is still shown"

    code, out, err = run_main(capsys, directory, "--json")
    assert (code, err) == (1, "")
    report = json.loads(out, parse_constant=reject)
    assert report["enrichment"]["events_pending"] == 1
    assert any(problem.startswith("invalid: ") for problem in report["problems"])

    for lookup_id in ("A", "G"):
        code, text, err = run_main(capsys, directory, "--key", lookup_id)
        assert (code, err) == (1, "")
        assert "PROBLEM: invalid: " in text
    assert "1 pending events" in text


def test_a_symlink_loop_named_like_a_partition_is_refused(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (store / "part-2.sqlite3").symlink_to(store / "part-2.sqlite3")
    code, out, err = run_main(capsys, store)
    assert code == 2 and out == ""
    assert (
        f"{store / 'part-2.sqlite3'}: cannot be checked: Too many levels of symbolic links" in err
    )
    assert "Traceback" not in err


def test_a_fifo_named_like_a_partition_is_refused_not_waited_on(store: Path) -> None:
    os.mkfifo(store / "part-2.sqlite3")
    done = run_module(store)
    assert done.returncode == 2 and done.stdout == ""
    assert f"{store / 'part-2.sqlite3'}: is not a regular file" in done.stderr


def test_reading_a_closed_store_creates_no_file_in_it(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for part in store.iterdir():
        with closing(sqlite3.connect(part)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    before = sorted(path.name for path in store.iterdir())
    assert before == ["part-0.sqlite3", "part-1.sqlite3"]
    assert main_json(capsys, store)["resume_epoch"] == 7
    run_main(capsys, store, "--key", "A")
    assert sorted(path.name for path in store.iterdir()) == before


@pytest.mark.parametrize(
    ("make_unsafe", "problem", "fix"),
    [
        (lambda d: d.chmod(0o775), "writable by group", "chmod go-w {d}"),
        (lambda d: d.chmod(0o757), "writable by others", "chmod go-w {d}"),
        (
            lambda d: (d / "part-0.sqlite3").chmod(0o666),
            "writable by group and others",
            "chmod go-w {d}/part-0.sqlite3",
        ),
    ],
    ids=["directory-group", "directory-others", "partition"],
)
def test_a_store_others_can_write_is_refused(
    store: Path, capsys: pytest.CaptureFixture[str], make_unsafe: Any, problem: str, fix: str
) -> None:
    make_unsafe(store)
    code, out, err = run_main(capsys, store)
    assert code == 2 and out == ""
    assert "Bytewax unpickles its snapshots" in err
    assert problem in err and fix.format(d=store) in err


def test_the_inspector_reads_a_store_its_trusted_group_may_write(
    store: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store.chmod(0o775)
    group = str(store.stat().st_gid)
    assert run_main(capsys, store)[0] == 2
    assert run_main(capsys, store, "--trusted-group", group)[0] == 0
    monkeypatch.setenv("ENRICH_RECOVERY_TRUSTED_GROUP", group)
    assert run_main(capsys, store)[0] == 0
    store.chmod(0o777)
    assert run_main(capsys, store)[0] == 2
