"""The SQLite dialect: the embedded default, so a new user needs no database server."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from operators.identifiers import quote
from sinks.dialect import RowError
from sinks.sql import (
    bound_columns,
    create_statements,
    missing_columns,
    overwrite_condition,
    stamped_columns,
)
from sinks.table import ColumnType, Table

_WAL_RETRY_SECONDS = 0.05
_TYPES: dict[ColumnType, str] = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "REAL",
    "bool": "INTEGER",
    "number": "NUMERIC",
    "json": "TEXT",
    "timestamp": "TEXT",
}
"""NUMERIC keeps an integer as a 64-bit INTEGER and a fraction as REAL: both read back exact."""
_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_PLACE_CODES = frozenset({sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM})
"""Open errors that come from where the file is, not from what it holds."""
_ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError)
"""Errors that concern the row being written (constraints, a trigger's RAISE, too big)."""


class CannotOpen(sqlite3.OperationalError):
    """The database file cannot be opened or created where the settings point: permanent."""


def _quote(identifier: str) -> str:
    return quote(identifier, "sqlite")


@cache
def upsert_sql(table: Table) -> str:
    """Insert a row, or overwrite every bound column of the row with the same key."""
    bound, stamped = bound_columns(table), stamped_columns(table)
    names = ", ".join(_quote(name) for name in (*bound, *stamped))
    values = ", ".join(["?"] * len(bound) + [_NOW] * len(stamped))
    updates = ", ".join(
        f"{_quote(name)} = excluded.{_quote(name)}" for name in bound if name != table.key
    )
    return (
        f"INSERT INTO {_quote(table.name)} ({names}) VALUES ({values}) "
        f"ON CONFLICT ({_quote(table.key)}) DO UPDATE SET {updates}"
        + overwrite_condition(table, "sqlite", _quote(table.name), "excluded")
    )


@dataclass(frozen=True)
class SqliteDialect:
    """A local SQLite file, shared by every partition and process.

    WAL lets readers run while a partition writes, and the busy timeout makes
    writers from other partitions or processes queue rather than fail.
    `synchronous=NORMAL` can lose the last commits on power loss, but not on a
    process crash, which replay from the source covers anyway.
    """

    path: Path
    busy_timeout_seconds: float = 30.0

    def connect(self) -> sqlite3.Connection:
        """A connection in WAL mode; `CannotOpen`, naming the path, if the file is unusable."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_seconds)
        except (OSError, sqlite3.OperationalError) as exc:
            raise self._cannot_open(exc) from exc
        try:
            self._set_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.OperationalError as exc:
            conn.close()
            if self.is_transient(exc):
                raise
            raise self._cannot_open(exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _set_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL, waiting out another process doing the same.

        SQLite answers a journal mode change with "database is locked" at once,
        without its busy handler, when another connection is changing it too
        (it would deadlock otherwise): two processes of one run starting
        together met it. Retried within the busy timeout, as the handler would.
        """
        deadline = time.monotonic() + self.busy_timeout_seconds
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if not self.is_transient(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(_WAL_RETRY_SECONDS)

    def _cannot_open(self, exc: BaseException) -> CannotOpen:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        hint = (
            "; its directory must exist or be creatable and be writable by this user, "
            "and the path must not be a directory"
            if isinstance(exc, OSError) or code in _PLACE_CODES
            else ""
        )
        return CannotOpen(f"cannot open SQLite database {self.path}: {exc}{hint}")

    def discard(self, conn: sqlite3.Connection) -> None:
        with suppress(sqlite3.Error):
            conn.close()

    def table_exists(self, conn: sqlite3.Connection, table: Table) -> bool:
        found = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE",
            (table.name,),
        ).fetchone()
        return found is not None

    def create_statements(self, table: Table) -> list[str]:
        return create_statements(table, "sqlite", _TYPES, if_not_exists=True)

    def missing_columns(self, conn: sqlite3.Connection, table: Table) -> list[str]:
        return missing_columns(conn, table, "sqlite")

    def already_exists(self, exc: BaseException) -> bool:
        return False

    def write(
        self, conn: sqlite3.Connection, table: Table, rows: Sequence[Sequence[Any]]
    ) -> list[RowError]:
        """All rows at once; only when one is refused, again one by one.

        SQLite has no batch errors: `executemany` stops at the first refused
        row. A savepoint undoes the partial batch, then each row runs inside
        its own savepoint so a refused one leaves nothing behind, all within
        the caller's transaction. `BEGIN IMMEDIATE` takes the write lock up
        front, where the busy timeout waits for it.
        """
        sql = upsert_sql(table)
        cursor = conn.cursor()
        try:
            if not conn.in_transaction:
                cursor.execute("BEGIN IMMEDIATE")
            cursor.execute("SAVEPOINT batch")
            try:
                cursor.executemany(sql, rows)
                refused = []
            except _ROW_ERRORS:
                cursor.execute("ROLLBACK TO batch")
                refused = _one_by_one(cursor, sql, rows)
            cursor.execute("RELEASE batch")
            return refused
        finally:
            cursor.close()

    def is_transient(self, exc: BaseException) -> bool:
        # The extended code (e.g. SQLITE_BUSY_SNAPSHOT) keeps the primary one in its low byte.
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        return isinstance(exc, sqlite3.OperationalError) and code in _BUSY_CODES


def _one_by_one(cursor: sqlite3.Cursor, sql: str, rows: Sequence[Sequence[Any]]) -> list[RowError]:
    refused = []
    for index, row in enumerate(rows):
        cursor.execute("SAVEPOINT row")
        try:
            cursor.execute(sql, row)
        except _ROW_ERRORS as exc:
            cursor.execute("ROLLBACK TO row")
            refused.append(RowError(index, exc.sqlite_errorname, str(exc)))
        cursor.execute("RELEASE row")
    return refused
