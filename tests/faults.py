"""Fault injection for the sink: a dialect that fails on cue, a clock that only pretends to wait.

Shared by the tests of retries, the circuit breaker and their metrics.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sinks.dialect import RowError
from sinks.sqlite import SqliteDialect
from sinks.table import Table

Where = Literal["connect", "write", "commit"]


class Busy(Exception):
    """Stands for a lost connection or lock contention: `FlakyDialect` calls it transient."""


@dataclass
class FakeClock:
    """Time that moves only when the code under test sleeps; every pause is recorded.

    `on_sleep` sees each pause before time moves, to look at the world while the
    code waits (a gauge, say).
    """

    now: float = 1_000.0
    pauses: list[float] = field(default_factory=list)
    on_sleep: Callable[[float], None] = lambda seconds: None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.on_sleep(seconds)
        self.pauses.append(seconds)
        self.now += seconds


@dataclass
class FlakyConnection:
    conn: sqlite3.Connection
    dialect: FlakyDialect

    def cursor(self) -> sqlite3.Cursor:
        return self.conn.cursor()

    def commit(self) -> None:
        self.dialect.trip("commit")
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        self.conn.close()


@dataclass
class FlakyDialect:
    """SQLite whose next `failures` attempts fail with `Busy` at `where`, then recover.

    Counts the connections it handed out and those the sink let go after a failure.
    """

    inner: SqliteDialect
    failures: int
    where: Where = "commit"
    connections: int = 0
    discarded: int = 0

    def trip(self, where: Where) -> None:
        if where == self.where and self.failures:
            self.failures -= 1
            raise Busy(f"injected failure at {where}")

    def connect(self) -> FlakyConnection:
        self.trip("connect")
        self.connections += 1
        return FlakyConnection(self.inner.connect(), self)

    def discard(self, conn: FlakyConnection) -> None:
        self.discarded += 1
        self.inner.discard(conn.conn)

    def table_exists(self, conn: FlakyConnection, table: Table) -> bool:
        return self.inner.table_exists(conn.conn, table)

    def create_statements(self, table: Table) -> list[str]:
        return self.inner.create_statements(table)

    def missing_columns(self, conn: FlakyConnection, table: Table) -> list[str]:
        return self.inner.missing_columns(conn.conn, table)

    def already_exists(self, exc: BaseException) -> bool:
        return self.inner.already_exists(exc)

    def write(
        self, conn: FlakyConnection, table: Table, rows: Sequence[Sequence[Any]]
    ) -> list[RowError]:
        refused = self.inner.write(conn.conn, table, rows)
        self.trip("write")
        return refused

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, Busy) or self.inner.is_transient(exc)
