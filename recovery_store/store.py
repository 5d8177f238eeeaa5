"""Read Bytewax 0.21 recovery partitions without ever writing to them.

Each partition is an SQLite file (`part-N.sqlite3`) in WAL mode. While a
dataflow has it open, its `-wal` and `-shm` files exist, and a `mode=ro` URI
reads through them, so the dataflow keeps writing while we read. Without
them, a `mode=ro` open would create them; the file is then opened
`immutable=1`, which reads the file alone and creates nothing. Reading each
file inside one transaction gives a consistent view of that file. Partitions
are separate files, so two of them may be read an epoch apart while a
dataflow runs.

A store is opened only when `recovery_store.trust` finds it safe: its files
are regular files, and no one else can write them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from recovery_store import trust

PARTITION_GLOB = "*.sqlite3"
TABLES = frozenset({"parts", "exs", "fronts", "commits", "snaps"})
BUSY_TIMEOUT_SECONDS = 5.0
NO_DATA = "CASE WHEN ser_change IS NULL THEN NULL ELSE X'' END"
"""A snapshot's bytes left unread: a stored state reads as b"", a discard still as None."""


class StoreError(Exception):
    """The directory cannot be read as a recovery store; the message says why."""


@dataclass(frozen=True)
class Partition:
    index: int
    count: int
    file: str
    created_at: str
    file_bytes: int
    """The file and its write-ahead log, where a running dataflow's latest writes sit."""


@dataclass(frozen=True)
class Execution:
    ex_num: int
    worker_count: int
    resume_epoch: int
    created_at: str


@dataclass(frozen=True)
class Frontier:
    ex_num: int
    worker_index: int
    epoch: int


@dataclass(frozen=True)
class Commit:
    part_index: int
    epoch: int


@dataclass(frozen=True)
class Snapshot:
    """One stored change; `data` is None when the step discarded the key at that epoch."""

    step_id: str
    state_key: str
    epoch: int
    data: bytes | None
    part_index: int


@dataclass(frozen=True)
class Store:
    """Every partition's rows, merged: Bytewax spreads executions and frontiers over them."""

    directory: Path
    partitions: list[Partition]
    executions: list[Execution]
    frontiers: list[Frontier]
    commits: list[Commit]
    snapshots: list[Snapshot]


def _size(path: Path) -> int:
    """0 for a file that is gone: a dataflow removes its log when it closes the store."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _live(path: Path) -> bool:
    """Whether a dataflow has the partition open (or was killed with it open)."""
    return all(path.with_name(f"{path.name}-{kind}").exists() for kind in ("wal", "shm"))


@contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    mode = "mode=ro" if _live(path) else "mode=ro&immutable=1"
    uri = f"{path.resolve().as_uri()}?{mode}"
    with closing(
        sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    ) as conn:
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")


def _read_partition(path: Path, store: Store, with_data: bool, data_of: str | None) -> None:
    with _read_only(path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        missing = ", ".join(sorted(TABLES - tables))
        if missing:
            raise StoreError(f"{path} is not a Bytewax recovery partition (no table {missing})")
        parts = conn.execute("SELECT part_index, part_count, created_at FROM parts").fetchall()
        if len(parts) != 1:
            raise StoreError(f"{path} holds {len(parts)} partition records instead of one")
        (index, count, created_at) = parts[0]
        size = _size(path) + _size(path.with_name(f"{path.name}-wal"))
        store.partitions.append(Partition(index, count, path.name, created_at, size))
        store.executions.extend(
            Execution(*row)
            for row in conn.execute(
                "SELECT ex_num, worker_count, resume_epoch, created_at FROM exs"
            )
        )
        store.frontiers.extend(
            Frontier(*row)
            for row in conn.execute("SELECT ex_num, worker_index, worker_frontier FROM fronts")
        )
        store.commits.extend(
            Commit(*row) for row in conn.execute("SELECT part_index, commit_epoch FROM commits")
        )
        binds: tuple[str, ...] = ()
        if with_data:
            change = "ser_change"
        elif data_of is not None:
            change = f"CASE WHEN instr(step_id, ?) > 0 THEN ser_change ELSE {NO_DATA} END"
            binds = (data_of,)
        else:
            change = NO_DATA
        store.snapshots.extend(
            Snapshot(step_id, key, epoch, data, index)
            for step_id, key, epoch, data in conn.execute(
                f"SELECT step_id, state_key, snap_epoch, {change} FROM snaps", binds
            )
        )


def read_store(
    directory: Path,
    with_data: bool = True,
    trusted_group: int | None = None,
    data_of: str | None = None,
) -> Store:
    """Every table of every partition in `directory`, or a StoreError saying why not.

    `with_data=False` reads snapshots' keys and epochs without their bytes,
    except those of steps whose id contains `data_of` (a lookup's joins, say,
    without its segments); `trusted_group` may write the store (see
    `trust.findings`).
    """
    if not directory.exists():
        raise StoreError(f"{directory} does not exist")
    if not directory.is_dir():
        raise StoreError(f"{directory} is not a directory")
    try:
        trust.check(directory, trusted_group)
    except trust.UntrustedStore as exc:
        raise StoreError(str(exc)) from None
    paths = sorted(directory.glob(PARTITION_GLOB))
    if not paths:
        raise StoreError(
            f"{directory} holds no recovery partitions ({PARTITION_GLOB}); create them with "
            f"`python -m bytewax.recovery {directory} COUNT`"
        )
    store = Store(directory, [], [], [], [], [])
    for path in paths:
        try:
            _read_partition(path, store, with_data, data_of)
        except sqlite3.Error as exc:
            raise StoreError(f"{path} cannot be read as a recovery partition: {exc}") from None
    store.partitions.sort(key=lambda part: part.index)
    store.executions.sort(key=lambda ex: ex.ex_num)
    store.frontiers.sort(key=lambda front: (front.ex_num, front.worker_index))
    store.commits.sort(key=lambda commit: commit.part_index)
    return store
