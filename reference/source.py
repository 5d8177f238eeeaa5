"""The database the reference table lives in: connecting, and running a read on it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, cast

from reference.query import WATERMARK, Database
from reference.settings import ReferenceTableSettings
from sinks.sqlite import SqliteDialect

Row = tuple[Any, ...]


class ReadCursor(Protocol):
    """The part of a DB-API cursor a read uses."""

    arraysize: int
    description: Sequence[Sequence[Any]] | None

    def execute(self, operation: str, parameters: Mapping[str, Any], /) -> object: ...

    def fetchmany(self, size: int, /) -> list[Row]: ...

    def close(self) -> object: ...


class ReadConnection(Protocol):
    """The part of a DB-API connection a read uses."""

    def cursor(self) -> ReadCursor: ...

    def close(self) -> object: ...


def connect(settings: ReferenceTableSettings) -> ReadConnection:
    """A DB-API connection to the reference table's database.

    The Oracle dialect is imported here only, so SQLite needs nothing of it.
    """
    if settings.publish_database == "oracle":
        from sinks.oracle import OracleDialect

        return cast(ReadConnection, OracleDialect.from_settings(settings).connect())
    return cast(ReadConnection, SqliteDialect(settings.publish_sqlite_path).connect())


def read(
    connection: ReadConnection,
    database: Database,
    sql: str,
    watermark: object | None,
    batch_size: int,
) -> Iterator[list[Row]]:
    """Rows in batches of `batch_size`, streamed: the table is never held in memory.

    python-oracledb binds a `datetime` as DATE, which drops fractions of a
    second; a watermark that has them is bound as TIMESTAMP so no row of the
    same second is read again. A whole-second one stays DATE, which compares
    with a DATE column without converting the column (and defeating its index).
    """
    cursor = connection.cursor()
    try:
        cursor.arraysize = batch_size
        binds: dict[str, object] = {}
        if watermark is not None:
            binds[WATERMARK] = watermark
            if database == "oracle" and isinstance(watermark, datetime) and watermark.microsecond:
                import oracledb

                cast(Any, cursor).setinputsizes(**{WATERMARK: oracledb.DB_TYPE_TIMESTAMP})
        cursor.execute(sql, binds)
        while rows := cursor.fetchmany(batch_size):
            yield rows
    finally:
        cursor.close()
