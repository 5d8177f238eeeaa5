"""The Oracle dialect, with python-oracledb: a pool, MERGE through array DML, batch errors.

Thin mode by default, so no Oracle client is needed; thick mode loads Oracle
Instant Client once per process. Identifiers are rendered quoted and in upper
case: quoting lets reserved words such as SIZE or DATE be column names, and
upper case makes them the very names users know from unquoted SQL.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import suppress
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

import oracledb
from pydantic import SecretStr

from config.connections import OracleConnection
from operators.identifiers import quote
from sinks.dialect import RowError
from sinks.sql import (
    bound_columns,
    create_statements,
    missing_columns,
    overwrite_condition,
    stamped_columns,
)
from sinks.table import MAX_TEXT, ColumnType, Table

_TYPES: dict[ColumnType, str] = {
    "str": f"VARCHAR2({MAX_TEXT} CHAR)",
    "int": "NUMBER(19)",
    "float": "BINARY_DOUBLE",
    "bool": "NUMBER(1)",
    "number": "NUMBER",
    "json": "CLOB",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
}
_BIND_TYPES: dict[ColumnType, Any] = {
    "str": oracledb.DB_TYPE_VARCHAR,
    "int": oracledb.DB_TYPE_NUMBER,
    "float": oracledb.DB_TYPE_BINARY_DOUBLE,
    "bool": oracledb.DB_TYPE_NUMBER,
    "number": oracledb.DB_TYPE_NUMBER,
    "json": oracledb.DB_TYPE_VARCHAR,
}
_MAX_VARCHAR_BIND_BYTES = 4000
"""Longest VARCHAR bind SQL accepts everywhere; beyond it Oracle calls it LONG (ORA-01461)."""


class Failure(Enum):
    """What an Oracle error means for the batch that met it."""

    TRANSIENT = "transient"
    """Retry the same work: the connection, the listener or the instance is briefly away."""
    ROW = "row"
    """The row's values are refused; the other rows of the batch can be written."""
    PERMANENT = "permanent"
    """Nothing will work until someone changes something (a table, a privilege, the SQL)."""


_TRANSIENT = frozenset(
    {
        18,  # maximum number of sessions exceeded
        20,  # maximum number of processes exceeded
        22,  # invalid session ID
        28,  # your session has been killed
        31,  # session marked for kill
        45,  # your session has been terminated with no replay
        51,  # timeout occurred while waiting for a resource
        54,  # resource busy and acquire with NOWAIT specified
        60,  # deadlock detected while waiting for resource
        257,  # archiver error: connect internal only until freed
        603,  # server session terminated by fatal error
        1012,  # not logged on
        1013,  # user requested cancel of current operation (call timeout)
        1033,  # initialization or shutdown in progress
        1034,  # ORACLE not available
        1089,  # immediate shutdown or close in progress
        1090,  # shutdown in progress
        1092,  # instance terminated, disconnection forced
        1536,  # space quota exceeded: waits for a DBA rather than failing
        1653,  # unable to extend table
        1654,  # unable to extend index
        1688,  # unable to extend table partition
        1691,  # unable to extend LOB segment
        2396,  # exceeded maximum idle time
        3111,  # break received on communication channel
        3113,  # end-of-file on communication channel
        3114,  # not connected to ORACLE
        3135,  # connection lost contact
        8177,  # can't serialize access for this transaction
        12153,  # TNS: not connected
        12170,  # TNS: connect timeout occurred
        12514,  # listener does not currently know of the service (instance starting)
        12516,  # listener could not find available handler
        12518,  # listener could not hand off client connection
        12519,  # no appropriate service handler found
        12520,  # listener could not find available handler for requested server type
        12521,  # listener does not currently know of the instance
        12526,  # listener: all appropriate instances are in restricted mode
        12527,  # listener: all instances are in restricted mode or blocking
        12528,  # listener: all appropriate instances are blocking new connections
        12535,  # TNS: operation timed out
        12537,  # TNS: connection closed
        12541,  # TNS: no listener
        12543,  # TNS: destination host unreachable
        12547,  # TNS: lost contact
        12560,  # TNS: protocol adapter error
        12570,  # TNS: packet reader failure
        12571,  # TNS: packet writer failure
        12583,  # TNS: no reader
        25408,  # can not safely replay call
        30006,  # resource busy; acquire with WAIT timeout expired
        30036,  # unable to extend segment in undo tablespace
    }
)
_TRANSIENT_DRIVER = frozenset(
    {
        "DPY-1001",  # not connected to database
        "DPY-4005",  # timed out waiting for the connection pool
        "DPY-4011",  # the database or network closed the connection
        "DPY-4024",  # call timeout exceeded
        "DPY-4033",  # exceeded idle time
        "DPY-6000",  # listener refused connection
        "DPY-6005",  # cannot connect to database
    }
)
_ROW = frozenset(
    {
        1,  # unique constraint violated
        1400,  # cannot insert NULL
        1401,  # inserted value too large for column
        1407,  # cannot update to NULL
        1426,  # numeric overflow
        1438,  # value larger than specified precision
        1455,  # converting column overflows integer datatype
        1461,  # can bind a LONG value only for insert into a LONG column
        1722,  # invalid number
        1830,  # date format picture ends before converting entire input string
        1840,  # input value not long enough for date format
        1841,  # (full) year must be between -4713 and +9999
        1843,  # invalid month
        1847,  # day of month must be between 1 and last day of month
        1858,  # a non-numeric character was found where a numeric was expected
        1861,  # literal does not match format string
        2290,  # check constraint violated
        2291,  # integrity constraint violated - parent key not found
        6502,  # PL/SQL numeric or value error (in a trigger)
        12899,  # value too large for column
        22835,  # buffer too small for CLOB to CHAR conversion
        40441,  # JSON syntax error
        40479,  # internal JSON serializer error
    }
)
_APPLICATION_ERRORS = range(20000, 21000)
"""RAISE_APPLICATION_ERROR, as a trigger refusing a row raises it."""
_ALREADY_EXISTS = frozenset({955, 1408})
"""Name already used by an existing object; such column list already indexed."""
_TABLE_MISSING = 942


def classify(code: str) -> Failure:
    """Whether an error, by its code (`ORA-12899`, `DPY-4011`), may be retried, is one
    row's, or stops everything. Unknown codes are permanent: a crash names the code,
    where a wrong guess would retry forever or dead-letter good rows."""
    prefix, _, number = code.partition("-")
    if prefix == "DPY":
        return Failure.TRANSIENT if code in _TRANSIENT_DRIVER else Failure.PERMANENT
    if prefix != "ORA" or not number.isdecimal():
        return Failure.PERMANENT
    ora = int(number)
    if ora in _TRANSIENT:
        return Failure.TRANSIENT
    if ora in _ROW or ora in _APPLICATION_ERRORS:
        return Failure.ROW
    return Failure.PERMANENT


def error_code(error: Any) -> str:
    """`ORA-nnnnn` when the database raised it, else the driver's own code.

    python-oracledb renames some database errors to driver errors (ORA-03113
    becomes DPY-4011) but keeps the database's number in `code`.
    """
    return f"ORA-{error.code:05d}" if error.code else str(error.full_code)


def _failure(error: Any) -> Failure:
    return Failure.TRANSIENT if error.isrecoverable else classify(error_code(error))


def _error_of(exc: BaseException) -> Any:
    """The error object python-oracledb puts first in an exception's arguments, if any."""
    if isinstance(exc, oracledb.Error) and exc.args and hasattr(exc.args[0], "full_code"):
        return exc.args[0]
    return None


def _quote(identifier: str) -> str:
    return quote(identifier, "oracle")


@cache
def merge_sql(table: Table) -> str:
    """One MERGE by key whose binds `:1`..`:n` each appear once, in bound-column order."""
    bound, stamped = bound_columns(table), stamped_columns(table)
    source = ", ".join(f":{i} {_quote(name)}" for i, name in enumerate(bound, start=1))
    updates = ", ".join(
        f"t.{_quote(name)} = s.{_quote(name)}" for name in bound if name != table.key
    )
    names = ", ".join(_quote(name) for name in (*bound, *stamped))
    values = ", ".join([f"s.{_quote(name)}" for name in bound] + ["SYSTIMESTAMP"] * len(stamped))
    return (
        f"MERGE INTO {_quote(table.name)} t "
        f"USING (SELECT {source} FROM dual) s "
        f"ON (t.{_quote(table.key)} = s.{_quote(table.key)}) "
        f"WHEN MATCHED THEN UPDATE SET {updates}"
        f"{overwrite_condition(table, 'oracle', 't', 's')} "
        f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values})"
    )


def input_sizes(table: Table, rows: Sequence[Sequence[Any]]) -> list[Any]:
    """Bind types per bound column, so a NULL in the first row cannot mislead `executemany`.

    A `json` column binds as VARCHAR, much the faster, unless one of this
    batch's values is too long for a VARCHAR bind; then as CLOB.
    """
    bound = [column for column in table.schema() if column.type != "timestamp"]
    return [
        oracledb.DB_TYPE_CLOB
        if column.type == "json" and _too_long_for_varchar(rows, index)
        else _BIND_TYPES[column.type]
        for index, column in enumerate(bound)
    ]


def _too_long_for_varchar(rows: Sequence[Sequence[Any]], index: int) -> bool:
    # A character takes at most 4 bytes, so only long strings need encoding to be sure.
    limit = _MAX_VARCHAR_BIND_BYTES
    return any(
        value is not None and len(value) * 4 > limit and len(value.encode()) > limit
        for value in (row[index] for row in rows)
    )


_THICK_MODE_LOCK = threading.Lock()


def _enable_thick_mode(lib_dir: Path | None) -> None:
    """Load Oracle Client once per process, before the first connection needs it."""
    with _THICK_MODE_LOCK:
        if oracledb.is_thin_mode():
            oracledb.init_oracle_client(lib_dir=None if lib_dir is None else str(lib_dir))


class OracleDialect:
    """One connection pool per dialect, created on first use and shared by the
    process's sink partitions (each holds one connection while it runs).

    `connect()` works for plain SELECTs too: the reference publisher reads
    its table through it.
    """

    def __init__(
        self,
        user: str,
        password: SecretStr,
        dsn: str,
        *,
        thick_mode: bool = False,
        client_lib_dir: Path | None = None,
        pool_min: int = 1,
        pool_max: int = 1,
        pool_timeout_seconds: float = 10.0,
    ) -> None:
        self.user = user
        self.dsn = dsn
        self.pool_min = pool_min
        self.pool_max = pool_max
        self._password = password
        self._thick_mode = thick_mode
        self._client_lib_dir = client_lib_dir
        self._pool_timeout_ms = round(pool_timeout_seconds * 1000)
        self._pool: oracledb.ConnectionPool | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: OracleConnection,
        *,
        pool_min: int = 1,
        pool_max: int = 1,
        pool_timeout_seconds: float = 10.0,
    ) -> OracleDialect:
        """Nothing connects until `connect()`; a missing setting is refused here."""
        settings.require_oracle("the Oracle dialect connects to Oracle")
        # Narrows the types for checkers: require_oracle raised if one is missing.
        assert settings.oracle_user and settings.oracle_password and settings.oracle_dsn
        return cls(
            settings.oracle_user,
            settings.oracle_password,
            settings.oracle_dsn,
            thick_mode=settings.oracle_thick_mode,
            client_lib_dir=settings.oracle_client_lib_dir,
            pool_min=pool_min,
            pool_max=pool_max,
            pool_timeout_seconds=pool_timeout_seconds,
        )

    def _connection_pool(self) -> oracledb.ConnectionPool:
        with self._lock:
            if self._pool is None:
                if self._thick_mode:
                    _enable_thick_mode(self._client_lib_dir)
                self._pool = oracledb.create_pool(
                    user=self.user,
                    password=self._password.get_secret_value(),
                    dsn=self.dsn,
                    min=self.pool_min,
                    max=self.pool_max,
                    increment=1,
                    getmode=oracledb.POOL_GETMODE_TIMEDWAIT,
                    wait_timeout=self._pool_timeout_ms,
                )
            return self._pool

    def connect(self) -> oracledb.Connection:
        return self._connection_pool().acquire()

    def discard(self, conn: oracledb.Connection) -> None:
        with suppress(oracledb.Error):
            self._connection_pool().drop(conn)

    def table_exists(self, conn: oracledb.Connection, table: Table) -> bool:
        """Probed by querying it, so a table in another schema behind a synonym counts."""
        cursor = conn.cursor()
        try:
            cursor.execute(f"SELECT 1 FROM {_quote(table.name)} WHERE 1 = 0")
        except oracledb.DatabaseError as exc:
            error = _error_of(exc)
            if error is not None and error.code == _TABLE_MISSING:
                return False
            raise
        finally:
            cursor.close()
        return True

    def create_statements(self, table: Table) -> list[str]:
        return create_statements(table, "oracle", _TYPES, if_not_exists=False)

    def missing_columns(self, conn: oracledb.Connection, table: Table) -> list[str]:
        return missing_columns(conn, table, "oracle")

    def already_exists(self, exc: BaseException) -> bool:
        error = _error_of(exc)
        return error is not None and error.code in _ALREADY_EXISTS

    def write(
        self, conn: oracledb.Connection, table: Table, rows: Sequence[Sequence[Any]]
    ) -> list[RowError]:
        """Array DML with batch errors: the database writes every row it accepts.

        A batch error that is not about the row itself (a deadlock, say) is
        raised as the exception it would have been, so the whole batch is
        retried or stops the dataflow like any other failure.
        """
        cursor = conn.cursor()
        try:
            cursor.setinputsizes(*input_sizes(table, rows))
            cursor.executemany(merge_sql(table), rows, batcherrors=True)
            errors = cursor.getbatcherrors()
        finally:
            cursor.close()
        refused = []
        for error in errors:
            if _failure(error) is not Failure.ROW:
                raise oracledb.DatabaseError(error)
            refused.append(RowError(error.offset, error_code(error), error.message))
        return refused

    def is_transient(self, exc: BaseException) -> bool:
        error = _error_of(exc)
        return error is not None and _failure(error) is Failure.TRANSIENT
