"""Everything that differs between databases, behind one small protocol.

The sink (batching, retry, circuit breaker, routing refused rows to the
dead-letter table, metrics) is written once against this protocol; a
database only adds a dialect: its SQL, how it runs a batch and reports the
rows it refused, and which of its errors are worth retrying.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

from sinks.table import Table


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


class RowError(NamedTuple):
    """A row the database refused, while the other rows of its batch could be written."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, never called on a RowError
    """Position of the row in the batch."""
    code: str
    """The database's own name for the error, e.g. `ORA-12899` or `SQLITE_CONSTRAINT_CHECK`."""
    message: str


C = TypeVar("C", bound=Connection)


class Dialect(Protocol[C]):
    """How to connect to one database, create tables in it and upsert rows into it."""

    def connect(self) -> C:
        """A connection with whatever session settings writing needs; `close()` gives it back."""
        ...

    def discard(self, conn: C) -> None:
        """Let go of a connection that failed, so the next attempt starts on a fresh one."""
        ...

    def table_exists(self, conn: C, table: Table) -> bool:
        """Whether the table can already be written, so no DDL (and no DDL privilege) is needed."""
        ...

    def create_statements(self, table: Table) -> list[str]:
        """DDL for the table, its key and its indexes."""
        ...

    def missing_columns(self, conn: C, table: Table) -> list[str]:
        """The columns an existing table lacks: one created by an earlier version."""
        ...

    def already_exists(self, exc: BaseException) -> bool:
        """Whether a DDL statement failed only because its object exists (a concurrent start)."""
        ...

    def write(self, conn: C, table: Table, rows: Sequence[Sequence[Any]]) -> list[RowError]:
        """Upsert `rows` (binds in the order of the table's bound columns) in the open transaction.

        Rows the database refuses are reported and leave nothing behind; the
        others stay written, uncommitted. Any other failure raises.
        """
        ...

    def is_transient(self, exc: BaseException) -> bool:
        """Whether retrying the same work may succeed (lost connection, lock contention)."""
        ...
