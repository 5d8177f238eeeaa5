"""Everything that differs between databases, behind one small protocol.

The sink only speaks DB-API (`cursor`, `executemany`, `commit`), so adding a
database means adding a dialect, never touching the sink.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sinks.table import KEY_COLUMN, ColumnType, EnrichedTable


class Cursor(Protocol):
    """The part of a DB-API cursor the sink uses."""

    def execute(self, operation: str, /) -> object: ...

    def executemany(
        self, operation: str, seq_of_parameters: Sequence[Sequence[Any]], /
    ) -> object: ...

    def close(self) -> object: ...


class Connection(Protocol):
    """The part of a DB-API connection the sink uses."""

    def cursor(self) -> Cursor: ...

    def commit(self) -> object: ...

    def rollback(self) -> object: ...

    def close(self) -> object: ...


class Dialect(Protocol):
    """How to connect, create the table and upsert rows in one database."""

    def connect(self) -> Connection:
        """A new connection with whatever session settings writing needs."""
        ...

    def create_table(self, table: EnrichedTable) -> list[str]:
        """DDL statements that are safe to run again when the table exists."""
        ...

    def upsert(self, table: EnrichedTable) -> str:
        """One statement, with binds in `table.columns()` order, that inserts a row or
        overwrites every other column of the row with the same event id."""
        ...

    def is_transient(self, exc: BaseException) -> bool:
        """Whether retrying the same work may succeed (lock contention and the like)."""
        ...


_SQLITE_TYPES: dict[ColumnType, str] = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "REAL",
    "bool": "INTEGER",
    "json": "TEXT",
}
_SQLITE_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _quote(identifier: str) -> str:
    """Quote an identifier that `EnrichedTable` already validated, so none holds a quote."""
    return f'"{identifier}"'


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_seconds)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def create_table(self, table: EnrichedTable) -> list[str]:
        columns = ", ".join(
            f"{_quote(column.name)} {_SQLITE_TYPES[column.type]}"
            + (" PRIMARY KEY" if column.name == KEY_COLUMN else "")
            + ("" if column.nullable else " NOT NULL")
            for column in table.schema()
        )
        return [f"CREATE TABLE IF NOT EXISTS {_quote(table.name)} ({columns})"]

    def upsert(self, table: EnrichedTable) -> str:
        names = [_quote(name) for name in table.columns()]
        updates = ", ".join(
            f"{name} = excluded.{name}" for name in names if name != _quote(KEY_COLUMN)
        )
        return (
            f"INSERT INTO {_quote(table.name)} ({', '.join(names)}) "
            f"VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT ({_quote(KEY_COLUMN)}) DO UPDATE SET {updates}"
        )

    def is_transient(self, exc: BaseException) -> bool:
        # The extended code (e.g. SQLITE_BUSY_SNAPSHOT) keeps the primary one in its low byte.
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        return isinstance(exc, sqlite3.OperationalError) and code in _SQLITE_BUSY_CODES
