"""A recovery store is opened only when it is safe and fits the dataflow (issue 12, items 14, 18).

Bytewax unpickles its store with plain pickle, so a store others can write is
refused before Bytewax opens it; a store written by a dataflow with another
layout (dead-letter path, sink partitions, shards, lookups) is refused with
what changed, instead of Bytewax's panic. Both through the real entry point,
`python -m bytewax.run dataflows.enrich`, as an operator starts it.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from flowrun import ROOT, flow_env, init_recovery

from dataflows.run_args import recovery_directory
from operators.enrichment import Pending
from operators.records import Event
from recovery_store import trust

RUN_TIMEOUT = 120.0
DEMO = {"demo_events": 1_000, "demo_references": 100, "miss_timeout_seconds": 3_600}
NOBODY = 65534
as_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="handing a file to another user needs root (chown)"
)


def run(
    work: Path, args: list[str], extra_env: dict[str, str] | None = None, **settings: Any
) -> subprocess.CompletedProcess[str]:
    env = {**flow_env(work, **{**DEMO, **settings}), **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.enrich", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def executions(recovery: Path) -> int:
    uri = f"{(recovery / 'part-0.sqlite3').as_uri()}?mode=ro&immutable=1"
    with closing(sqlite3.connect(uri, uri=True)) as conn:
        return conn.execute("SELECT COUNT(*) FROM exs").fetchone()[0]


def assert_refused(done: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert done.returncode == 2, done.stderr[-3_000:]
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr[-3_000:]
    assert "Traceback" not in done.stderr and "panicked" not in done.stderr


# Trust: owner and mode bits, as ssh checks key files.


def test_a_private_store_is_trusted(tmp_path: Path) -> None:
    init_recovery(tmp_path)
    assert trust.findings(tmp_path / "recovery") == []


@pytest.mark.parametrize(
    ("target", "mode", "problem"),
    [
        (".", 0o775, "writable by group (mode drwxrwxr-x, group "),
        (".", 0o1777, "writable by group and others"),
        ("part-0.sqlite3", 0o646, "writable by others (mode -rw-r--rw-, group "),
        ("part-0.sqlite3-wal", 0o664, "writable by group"),
    ],
)
def test_what_others_can_write_is_found(
    tmp_path: Path, target: str, mode: int, problem: str
) -> None:
    init_recovery(tmp_path)
    store = tmp_path / "recovery"
    (store / "part-0.sqlite3-wal").touch(mode=0o600)
    path = (store / target).resolve()
    path.chmod(mode)
    [finding] = trust.findings(store)
    assert finding.path.resolve() == path
    assert problem in finding.problem
    assert finding.fix.startswith(f"chmod go-w {store / target if target != '.' else store}")


@as_root
def test_a_store_owned_by_another_user_is_found(tmp_path: Path) -> None:
    init_recovery(tmp_path)
    store = tmp_path / "recovery"
    os.chown(store / "part-0.sqlite3", NOBODY, NOBODY)
    [finding] = trust.findings(store)
    assert finding.problem == f"owned by uid {NOBODY}, not by this process's user (uid 0)"
    assert finding.fix.startswith(f"chown 0 {store / 'part-0.sqlite3'}")


def test_links_and_special_files_named_like_partitions_are_found(tmp_path: Path) -> None:
    init_recovery(tmp_path)
    store = tmp_path / "recovery"
    (store / "part-1.sqlite3").symlink_to(store / "part-1.sqlite3")
    (store / "part-2.sqlite3").symlink_to(tmp_path / "gone")
    os.mkfifo(store / "part-3.sqlite3")
    (store / "part-4.sqlite3").symlink_to(store / "part-0.sqlite3")
    assert [(f.path.name, f.problem) for f in trust.findings(store)] == [
        ("part-1.sqlite3", "cannot be checked: Too many levels of symbolic links"),
        ("part-2.sqlite3", "cannot be checked: No such file or directory"),
        ("part-3.sqlite3", "is not a regular file"),
    ], "a link to a private partition is fine"


def test_a_trusted_group_may_write_but_others_still_may_not(tmp_path: Path) -> None:
    """A Kubernetes fsGroup makes the volume group-writable by the pod's own group."""
    init_recovery(tmp_path)
    store = tmp_path / "recovery"
    group = store.stat().st_gid
    store.chmod(0o2775)
    (store / "part-0.sqlite3").chmod(0o664)
    [finding, _] = trust.findings(store)
    assert finding.fix == (
        f"chmod go-w {store}, or ENRICH_RECOVERY_TRUSTED_GROUP={group} if only this "
        "dataflow's processes are in that group (a Kubernetes fsGroup)"
    )
    assert trust.findings(store, trusted_group=group) == []
    assert len(trust.findings(store, trusted_group=group + 1)) == 2
    (store / "part-0.sqlite3").chmod(0o666)
    [finding] = trust.findings(store, trusted_group=group)
    assert finding.problem.startswith("writable by others")


def test_without_bytewax_run_no_recovery_directory_is_guessed() -> None:
    assert recovery_directory() is None


# Item 18 through the real entry point.


def test_the_dataflow_refuses_a_store_others_can_write_before_bytewax_opens_it(
    tmp_path: Path,
) -> None:
    args = init_recovery(tmp_path)
    store = tmp_path / "recovery"
    store.chmod(0o777)
    marker = tmp_path / "ran"
    with closing(sqlite3.connect(store / "part-0.sqlite3")) as conn:
        # What an attacker who can write the directory would plant; never unpickled.
        exploit = pickle.dumps(Exploit(f"touch {marker}"))
        conn.execute("INSERT INTO exs (ex_num, worker_count, resume_epoch) VALUES (0, 1, 1)")
        conn.execute("INSERT INTO fronts (ex_num, worker_index, worker_frontier) VALUES (0, 0, 3)")
        conn.execute(
            "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) "
            "VALUES ('enrich.input', '0', 1, ?)",
            (exploit,),
        )
        conn.commit()

    done = run(tmp_path, args)
    assert_refused(
        done,
        f"enrich: refusing the recovery store {store}: Bytewax unpickles its snapshots",
        f"{store}: writable by group and others (mode drwxrwxrwx, group {store.stat().st_gid}); "
        f"fix: chmod go-w {store}\n",
    )
    assert not marker.exists()
    assert executions(store) == 1, "Bytewax never started an execution on it"

    store.chmod(0o700)
    with closing(sqlite3.connect(store / "part-0.sqlite3")) as conn:
        for table in ("snaps", "fronts", "exs"):
            conn.execute(f"DELETE FROM {table}")
        conn.commit()
    done = run(tmp_path, args)
    assert done.returncode == 0, done.stderr[-3_000:]
    assert executions(store) == 1


def test_the_store_named_by_bytewax_environment_variables_is_checked_too(tmp_path: Path) -> None:
    init_recovery(tmp_path)
    store = tmp_path / "recovery"
    (store / "part-0.sqlite3").chmod(0o664)
    done = run(
        tmp_path,
        [],
        {
            "BYTEWAX_RECOVERY_DIRECTORY": str(store),
            "BYTEWAX_SNAPSHOT_INTERVAL": "0",
            "BYTEWAX_RECOVERY_BACKUP_INTERVAL": "0",
        },
    )
    assert_refused(done, f"{store / 'part-0.sqlite3'}: writable by group")
    assert executions(store) == 0


def test_the_dataflow_runs_on_a_store_its_trusted_group_may_write(tmp_path: Path) -> None:
    args = init_recovery(tmp_path)
    store = tmp_path / "recovery"
    store.chmod(0o2775)
    (store / "part-0.sqlite3").chmod(0o664)
    assert_refused(run(tmp_path, args), f"{store}: writable by group")
    done = run(tmp_path, args, recovery_trusted_group=store.stat().st_gid)
    assert done.returncode == 0, done.stderr[-3_000:]
    assert executions(store) == 1


@as_root
def test_the_dataflow_refuses_a_partition_owned_by_another_user(tmp_path: Path) -> None:
    args = init_recovery(tmp_path)
    store = tmp_path / "recovery"
    os.chown(store / "part-0.sqlite3", NOBODY, NOBODY)
    assert_refused(
        run(tmp_path, args),
        f"{store / 'part-0.sqlite3'}: owned by uid {NOBODY}, not by this process's user (uid 0)",
        f"fix: chown 0 {store / 'part-0.sqlite3'}",
    )


class Exploit:
    """Pickles into a call of `os.system`, as a crafted snapshot would."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


# Item 14: a layout change is refused with what changed, or simply works.


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A recovery store of a finished demo run with the default layout."""
    work = tmp_path_factory.mktemp("finished")
    args = init_recovery(work)
    done = run(work, args)
    assert done.returncode == 0, done.stderr[-3_000:]
    return work, args


def resume_with(tmp_path: Path, finished: tuple[Path, list[str]], **changed: Any) -> Any:
    work, args = finished
    tmp_path.mkdir(exist_ok=True)
    copy = tmp_path / "recovery"
    subprocess.run(["cp", "-a", str(work / "recovery"), str(copy)], check=True)
    args = [str(copy) if arg == str(work / "recovery") else arg for arg in args]
    settings = {"dead_letter_path": str(work / "dead_letters.jsonl"), **changed}
    return run(tmp_path, args, **settings), copy


def test_a_changed_dead_letter_path_is_refused_with_what_changed(
    tmp_path: Path, finished: tuple[Path, list[str]]
) -> None:
    work, _ = finished
    new_path = tmp_path / "elsewhere.jsonl"
    done, store = resume_with(tmp_path, finished, dead_letter_path=new_path)
    assert_refused(
        done,
        f"enrich: the recovery store {store} was written by a dataflow laid out differently; "
        "a resume would stop in Bytewax's panic or lose the state named here:",
        f"step 'enrich.dead_letter_out' (ENRICH_DEAD_LETTER_PATH): the store holds state for "
        f"'{work / 'dead_letters.jsonl'}', which this dataflow does not have (it has "
        f"'{new_path}')",
        "Either run again with the settings the store was written with",
        "(mkdir -m 700 DIR && python -m bytewax.recovery DIR COUNT)",
    )
    assert executions(store) == 1, "refused before Bytewax opened the store"


@pytest.mark.parametrize(
    ("changed", "what"),
    [
        ({"sink_partitions": 2}, "step 'enrich.sink' (ENRICH_SINK_PARTITIONS): the store holds "
         "state for '2', '3', which this dataflow does not have (it has '0', '1')"),
        ({"shards": 8}, "step 'enrich.enrich_exchange' (ENRICH_SHARDS): the store holds state "
         "for '00', '01', '02', '03', '04', '05', '06', '07' and 56 more, which this dataflow "
         "does not have (it has '0', '1', '2', '3', '4', '5', '6', '7')"),
        ({"demo_partitions": 2}, "step 'enrich.input' (ENRICH_DEMO_PARTITIONS, ENRICH_LOOKUPS): "
         "the store holds state for '2', '3'"),
        # More shards keep every stored name ('00'..'63' fit '00'..'99'), but ids route
        # anew: the count the joins recorded tells.
        ({"shards": 100}, "step 'enrich.enrich_security' (ENRICH_SHARDS): its state was "
         "routed over 64 shards, this dataflow routes over 100; lookup ids would reach other "
         "shards than the ones their events wait in"),
    ],
    ids=["fewer-sink-partitions", "other-shards", "fewer-demo-partitions", "more-shards"],
)  # fmt: skip
def test_other_layout_changes_are_refused_not_a_panic(
    tmp_path: Path, finished: tuple[Path, list[str]], changed: dict[str, int], what: str
) -> None:
    done, store = resume_with(tmp_path, finished, **changed)
    assert_refused(done, what)
    assert executions(store) == 1


def test_a_layout_the_store_fits_resumes(tmp_path: Path, finished: tuple[Path, list[str]]) -> None:
    """More sink partitions only add keys: Bytewax resumes, and so does the check let it."""
    for changed in ({}, {"sink_partitions": 8}):
        done, store = resume_with(tmp_path / str(len(changed)), finished, **changed)
        assert done.returncode == 0, done.stderr[-3_000:]
        assert executions(store) == 2


def add_state(store: Path, step_id: str, state: object) -> None:
    """A snapshot of a step the dataflow no longer has, loaded by a resume."""
    with closing(sqlite3.connect(store / "part-0.sqlite3")) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO snaps (step_id, state_key, snap_epoch, ser_change) "
            "VALUES (?, '00', 1, ?)",
            (step_id, pickle.dumps(state)),
        )
        conn.commit()


def test_a_step_that_is_gone_is_refused_only_when_events_wait_in_it(
    tmp_path: Path, finished: tuple[Path, list[str]]
) -> None:
    """Bytewax drops a gone step's state silently: fine for offsets, not for waiting events."""
    work, args = finished
    copy = tmp_path / "recovery"
    subprocess.run(["cp", "-a", str(work / "recovery"), str(copy)], check=True)
    args = [str(copy) if arg == str(work / "recovery") else arg for arg in args]
    add_state(copy, "enrich.reference_in_gone", 1234)
    add_state(copy, "enrich.enrich_gone", [])
    done = run(tmp_path, args, dead_letter_path=work / "dead_letters.jsonl")
    assert done.returncode == 0, done.stderr[-3_000:]

    event = Event("e1", "A", None, {"security_id": "A"}, "demo/event/0/1")
    add_state(copy, "enrich.enrich_gone", [Pending(event, 1.0, 2.0), Pending(event, 1.0, 2.0)])
    assert_refused(
        run(tmp_path, args, dead_letter_path=work / "dead_letters.jsonl"),
        "step 'enrich.enrich_gone' is gone from this dataflow (a lookup removed?), and its "
        "state holds 2 waiting events that a resume would drop",
    )
