"""Creating the sink's tables: by the sink at start, and by `enrich create-tables`."""

from __future__ import annotations

from typing import Any

from sinks.dialect import Dialect
from sinks.table import Table


def ddl(dialect: Dialect[Any], *tables: Table) -> list[str]:
    """Every statement that creates the tables, for a DBA to read or run."""
    return [statement for table in tables for statement in dialect.create_statements(table)]


class TableOutdated(RuntimeError):
    """An existing table lacks columns this version writes: a permanent error, said at start.

    The sink never alters a table it did not just create (a DBA may own it), so
    the message gives the statement that adds each column.
    """


def create_tables(dialect: Dialect[Any], *tables: Table) -> None:
    """Create the tables that are missing; refuse, naming them, columns an existing one lacks.

    A table that can already be written is left alone, so a sink whose user
    may not create tables runs on tables a DBA created. Safe to race from
    several partitions or processes: an object a concurrent start created
    first counts as done.
    """
    conn = dialect.connect()
    try:
        missing = [table for table in tables if not dialect.table_exists(conn, table)]
        if missing:
            _run(dialect, conn, ddl(dialect, *missing))
        for table in tables:
            if table not in missing:
                _require_columns(dialect, conn, table)
    except BaseException:
        dialect.discard(conn)
        raise
    conn.close()


def _run(dialect: Dialect[Any], conn: Any, statements: list[str]) -> None:
    cursor = conn.cursor()
    try:
        for statement in statements:
            try:
                cursor.execute(statement)
            except Exception as exc:
                if not dialect.already_exists(exc):
                    raise
        conn.commit()
    finally:
        cursor.close()


def _require_columns(dialect: Dialect[Any], conn: Any, table: Table) -> None:
    lacking = dialect.missing_columns(conn, table)
    if lacking:
        raise TableOutdated(
            f"table {table.name!r} was created by an earlier version and lacks the column(s) "
            f"{', '.join(lacking)} this version writes; add them as docs/OPERATIONS.md says "
            '("Tables created by earlier versions"), or write to a new table '
            "(ENRICH_TABLE, ENRICH_SQLITE_PATH)"
        )
