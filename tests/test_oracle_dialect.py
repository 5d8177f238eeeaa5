"""The Oracle dialect without a server: error classification, SQL, bind types, batch errors, pool.

Errors are python-oracledb's own error objects, built as the driver builds
them from a database's message; the connection and pool are stand-ins that
record what the dialect asked of them. What only a real Oracle can show is in
tests/test_oracle_sink.py.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import oracledb
import pytest
from faults import FakeClock
from oracledb.errors import _Error
from prometheus_client import REGISTRY
from pydantic import SecretStr

from config.connections import OracleConnection
from sinks.dialect import RowError
from sinks.oracle import Failure, OracleDialect, classify, error_code, input_sizes, merge_sql
from sinks.table import DeadLetterTable, EnrichedTable
from sinks.upsert import UpsertSink

TABLE = EnrichedTable(
    name="enriched_events",
    event_columns=(("price", "float"), ("size", "int"), ("urgent", "bool")),
    reference_columns=(("name", "str"),),
    unstored_fields=frozenset({"event_id", "security_id", "ts"}),
    lookup_index=True,
)
LETTERS = DeadLetterTable("enrich_dead_letters")


def ora(code: int, text: str = "refused", offset: int = 0) -> _Error:
    """A database error as python-oracledb makes it from the server's message."""
    return _Error(f"ORA-{code:05d}: {text}", code=code, offset=offset)


@pytest.mark.parametrize(
    ("code", "failure"),
    [
        ("ORA-12899", Failure.ROW),
        ("ORA-01400", Failure.ROW),
        ("ORA-01722", Failure.ROW),
        ("ORA-00001", Failure.ROW),
        ("ORA-02290", Failure.ROW),
        ("ORA-20001", Failure.ROW),
        ("ORA-03113", Failure.TRANSIENT),
        ("ORA-03135", Failure.TRANSIENT),
        ("ORA-12541", Failure.TRANSIENT),
        ("ORA-12514", Failure.TRANSIENT),
        ("ORA-00060", Failure.TRANSIENT),
        ("ORA-01089", Failure.TRANSIENT),
        ("DPY-4011", Failure.TRANSIENT),
        ("DPY-4005", Failure.TRANSIENT),
        ("DPY-6005", Failure.TRANSIENT),
        ("ORA-00942", Failure.PERMANENT),
        ("ORA-01031", Failure.PERMANENT),
        ("ORA-01017", Failure.PERMANENT),
        ("ORA-00904", Failure.PERMANENT),
        ("ORA-21000", Failure.PERMANENT),
        ("DPY-3013", Failure.PERMANENT),
        ("DPI-1047", Failure.PERMANENT),
        ("ORA-", Failure.PERMANENT),
        ("", Failure.PERMANENT),
    ],
)
def test_codes_are_classified_as_transient_row_or_permanent(code: str, failure: Failure) -> None:
    assert classify(code) is failure


def test_the_database_code_is_kept_when_the_driver_renames_the_error() -> None:
    lost = ora(3113, "end-of-file on communication channel")
    assert lost.full_code == "DPY-4011"
    assert error_code(lost) == "ORA-03113"
    assert error_code(_Error("DPY-4005: timed out waiting for the connection pool")) == "DPY-4005"


DIALECT = OracleDialect("enrich", SecretStr("pw"), "db:1521/FREEPDB1")


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (oracledb.DatabaseError(ora(3113)), True),
        (oracledb.OperationalError(ora(1033, "initialization or shutdown in progress")), True),
        (oracledb.DatabaseError(_Error("DPY-6005: cannot connect to database")), True),
        (oracledb.DatabaseError(ora(942, "table or view does not exist")), False),
        (oracledb.IntegrityError(ora(1400)), False),
        (ValueError("ORA-03113"), False),
    ],
)
def test_only_errors_worth_retrying_are_transient(exc: BaseException, transient: bool) -> None:
    assert DIALECT.is_transient(exc) is transient


def test_merge_binds_each_value_once_and_quotes_upper_case_names() -> None:
    sql = merge_sql(TABLE)
    assert sql.startswith('MERGE INTO "ENRICHED_EVENTS" t USING (SELECT :1 "EVENT_ID", ')
    assert re.findall(r":(\d+)", sql) == [str(i) for i in range(1, len(TABLE.columns()) + 1)]
    assert 'ON (t."EVENT_ID" = s."EVENT_ID")' in sql
    assert 't."EVENT_ID" =' not in sql.split("UPDATE SET", 1)[1], "the key is never updated"
    assert '"SIZE"' in sql and '"URGENT"' in sql
    names = re.findall(r'"([^"]*)"', sql)
    assert names and all(name == name.upper() for name in names)


def test_the_merge_never_lets_an_earlier_copy_overwrite_a_later_one() -> None:
    update = merge_sql(TABLE).split("WHEN MATCHED THEN UPDATE SET ")[1].split(" WHEN NOT")[0]
    assert update.endswith(' WHERE t."ARRIVAL_SEQ" IS NULL OR s."ARRIVAL_SEQ" >= t."ARRIVAL_SEQ"')
    assert " WHERE " not in merge_sql(LETTERS), "dead letters have no arrival order"


def test_the_dead_letter_merge_stamps_the_first_write_only() -> None:
    sql = merge_sql(LETTERS)
    assert len(re.findall(r":\d+", sql)) == 7
    update, insert = sql.split("WHEN MATCHED THEN UPDATE SET ")[1].split(" WHEN NOT MATCHED")
    assert "DEAD_LETTERED_AT" not in update
    assert insert.endswith(
        '"DEAD_LETTERED_AT") VALUES (s."ORIGIN", s."REASON", s."CODE", '
        's."DETAIL", s."EVENT_ID", s."LOOKUP_ID", s."PAYLOAD", SYSTIMESTAMP)'
    )
    assert 'ON (t."ORIGIN" = s."ORIGIN")' in sql


def test_tables_get_bounded_strings_a_key_and_an_index_on_lookup_id() -> None:
    create, index = DIALECT.create_statements(TABLE)
    assert create.startswith('CREATE TABLE "ENRICHED_EVENTS" (')
    assert '"EVENT_ID" VARCHAR2(1000 CHAR) PRIMARY KEY' in create
    assert '"LOOKUP_ID" VARCHAR2(1000 CHAR) NOT NULL' in create
    assert '"EVENT_TIME" BINARY_DOUBLE,' in create
    assert '"REF_VERSION" NUMBER,' in create
    assert '"SIZE" NUMBER(19),' in create
    assert '"URGENT" NUMBER(1),' in create
    assert '"ATTRIBUTES" CLOB)' in create
    assert index == 'CREATE INDEX "ENRICHED_EVENTS_LOOKUP_ID" ON "ENRICHED_EVENTS" ("LOOKUP_ID")'
    [letters] = DIALECT.create_statements(LETTERS)
    assert '"ORIGIN" VARCHAR2(1000 CHAR) PRIMARY KEY' in letters
    assert '"PAYLOAD" CLOB' in letters
    assert '"DEAD_LETTERED_AT" TIMESTAMP WITH TIME ZONE NOT NULL' in letters


def test_bind_types_come_from_the_table_not_from_a_first_row_of_nulls() -> None:
    rows = [
        (None,) * len(TABLE.columns()),
        ("e1", "A", 1.5, "enriched", None, 0.0, 2.0, 7, 9.5, 4, True, "N", "[]", '{"a":1}'),
    ]
    assert input_sizes(TABLE, rows) == [
        oracledb.DB_TYPE_VARCHAR,
        oracledb.DB_TYPE_VARCHAR,
        oracledb.DB_TYPE_BINARY_DOUBLE,
        oracledb.DB_TYPE_VARCHAR,
        oracledb.DB_TYPE_VARCHAR,
        oracledb.DB_TYPE_BINARY_DOUBLE,
        oracledb.DB_TYPE_NUMBER,
        oracledb.DB_TYPE_NUMBER,
        oracledb.DB_TYPE_BINARY_DOUBLE,
        oracledb.DB_TYPE_NUMBER,
        oracledb.DB_TYPE_NUMBER,
        oracledb.DB_TYPE_VARCHAR,
        oracledb.DB_TYPE_VARCHAR,
        oracledb.DB_TYPE_VARCHAR,
    ]


@pytest.mark.parametrize(
    ("attributes", "bind"),
    [
        ("x" * 4000, oracledb.DB_TYPE_VARCHAR),
        ("x" * 4001, oracledb.DB_TYPE_CLOB),
        ("é" * 2000, oracledb.DB_TYPE_VARCHAR),
        ("é" * 2001, oracledb.DB_TYPE_CLOB),
    ],
)
def test_json_longer_than_a_varchar_bind_binds_as_clob(attributes: str, bind: Any) -> None:
    row = (
        "e1",
        "A",
        None,
        "enriched",
        None,
        0.0,
        None,
        1,
        None,
        None,
        None,
        None,
        "[]",
        attributes,
    )
    assert input_sizes(TABLE, [row])[-1] is bind


@dataclass
class RecordingCursor:
    """Takes what the dialect binds and answers with the batch errors it is given."""

    batch_errors: list[_Error]
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def setinputsizes(self, *types: Any) -> None:
        self.calls.append(("setinputsizes", types))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], *, batcherrors: bool) -> None:
        self.calls.append(("executemany", (sql, list(rows), batcherrors)))

    def getbatcherrors(self) -> list[_Error]:
        return self.batch_errors

    def close(self) -> None:
        self.calls.append(("close", ()))


@dataclass
class RecordingConnection:
    cursor_: RecordingCursor

    def cursor(self) -> RecordingCursor:
        return self.cursor_


ROWS = [("e0", "A"), ("e1", "B"), ("e2", "C")]


def write(*errors: _Error) -> tuple[list[RowError], RecordingCursor]:
    cursor = RecordingCursor(list(errors))
    table = EnrichedTable("t", (), (("name", "str"),), frozenset())
    rows = [(*row, None, "enriched", None, 0.0, None, 1, "N", "[]", None) for row in ROWS]
    refused = DIALECT.write(RecordingConnection(cursor), table, rows)
    return refused, cursor


def test_a_batch_runs_as_one_merge_with_batch_errors_and_reports_refused_rows() -> None:
    too_large = 'value too large for column "ENRICH"."T"."NAME" (actual: 1001, maximum: 1000)'
    refused, cursor = write(ora(12899, too_large, offset=1), ora(1400, "cannot insert NULL", 2))
    assert [name for name, _ in cursor.calls] == ["setinputsizes", "executemany", "close"]
    sql, rows, batcherrors = cursor.calls[1][1]
    assert sql == merge_sql(EnrichedTable("t", (), (("name", "str"),), frozenset()))
    assert len(rows) == 3 and batcherrors is True
    assert [(e.index, e.code) for e in refused] == [(1, "ORA-12899"), (2, "ORA-01400")]
    assert refused[0].message.startswith("ORA-12899: value too large")


@pytest.mark.parametrize(("code", "transient"), [(60, True), (942, False)])
def test_a_batch_error_that_is_not_the_rows_fault_fails_the_whole_batch(
    code: int, transient: bool
) -> None:
    with pytest.raises(oracledb.DatabaseError) as raised:
        write(ora(12899, offset=0), ora(code, offset=1))
    assert raised.value.args[0].code == code
    assert DIALECT.is_transient(raised.value) is transient


@dataclass
class FakePool:
    acquired: int = 0
    dropped: list[Any] = field(default_factory=list)

    def acquire(self) -> str:
        self.acquired += 1
        return f"connection {self.acquired}"

    def drop(self, conn: Any) -> None:
        self.dropped.append(conn)


def test_one_pool_per_dialect_created_on_first_connect_with_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[dict[str, Any]] = []
    pool = FakePool()

    def create_pool(**kwargs: Any) -> FakePool:
        made.append(kwargs)
        return pool

    monkeypatch.setattr(oracledb, "create_pool", create_pool)
    settings = OracleConnection(
        oracle_user="enrich", oracle_password=SecretStr("s3cret"), oracle_dsn="db/FREEPDB1"
    )
    dialect = OracleDialect.from_settings(
        settings, pool_min=2, pool_max=4, pool_timeout_seconds=2.5
    )
    assert made == [], "nothing connects before connect()"
    assert dialect.connect() == "connection 1"
    assert dialect.connect() == "connection 2"
    dialect.discard("connection 2")
    assert made == [
        {
            "user": "enrich",
            "password": "s3cret",
            "dsn": "db/FREEPDB1",
            "min": 2,
            "max": 4,
            "increment": 1,
            "getmode": oracledb.POOL_GETMODE_TIMEDWAIT,
            "wait_timeout": 2500,
        }
    ]
    assert pool.dropped == ["connection 2"]
    assert "s3cret" not in repr(dialect.__dict__)


def test_thick_mode_loads_the_client_library_once_per_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    loaded: list[str | None] = []
    thin = [True]

    def init_oracle_client(lib_dir: str | None = None) -> None:
        loaded.append(lib_dir)
        thin[0] = False

    monkeypatch.setattr(oracledb, "init_oracle_client", init_oracle_client)
    monkeypatch.setattr(oracledb, "is_thin_mode", lambda: thin[0])
    monkeypatch.setattr(oracledb, "create_pool", lambda **kwargs: FakePool())
    settings = OracleConnection(
        oracle_user="u",
        oracle_password=SecretStr("p"),
        oracle_dsn="d",
        oracle_thick_mode=True,
        oracle_client_lib_dir=tmp_path,
    )
    for _ in range(2):
        OracleDialect.from_settings(settings).connect()
    assert loaded == [str(tmp_path)]


def test_a_dialect_without_credentials_is_refused_naming_what_is_missing() -> None:
    with pytest.raises(ValueError, match="oracle_password, oracle_dsn must be set"):
        OracleDialect.from_settings(OracleConnection(oracle_user="enrich"))


def test_the_table_probe_tells_a_missing_table_from_other_errors() -> None:
    @dataclass
    class Probe:
        error: BaseException | None

        def cursor(self) -> Probe:
            return self

        def execute(self, sql: str) -> None:
            assert sql == 'SELECT 1 FROM "ENRICHED_EVENTS" WHERE 1 = 0'
            if self.error is not None:
                raise self.error

        def close(self) -> None:
            pass

    assert DIALECT.table_exists(Probe(None), TABLE)
    missing = oracledb.DatabaseError(ora(942, "table or view does not exist"))
    assert not DIALECT.table_exists(Probe(missing), TABLE)
    denied = oracledb.DatabaseError(ora(1031, "insufficient privileges"))
    with pytest.raises(oracledb.DatabaseError):
        DIALECT.table_exists(Probe(denied), TABLE)


def test_objects_that_exist_already_are_done_anything_else_is_not() -> None:
    assert DIALECT.already_exists(oracledb.DatabaseError(ora(955, "name is already used")))
    assert DIALECT.already_exists(oracledb.DatabaseError(ora(1408, "column list indexed")))
    assert not DIALECT.already_exists(oracledb.DatabaseError(ora(1031)))
    assert not DIALECT.already_exists(RuntimeError("ORA-00955"))


class StopWaiting(Exception):
    """Ends a test whose sink would otherwise wait for the database forever."""


def test_a_listener_that_is_down_is_waited_for_behind_the_breaker_never_given_up() -> None:
    """A real connection attempt to a port nobody listens on: DPY-6005, transient."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dialect = OracleDialect("enrich", SecretStr("pw"), f"127.0.0.1:{port}/FREEPDB1")
    retries = REGISTRY.get_sample_value("enrich_sink_retries_total") or 0.0

    def sleep(seconds: float) -> None:
        if len(clock.pauses) == 6:
            raise StopWaiting

    clock = FakeClock(on_sleep=sleep)
    sink = UpsertSink(dialect, TABLE, 1, 10, clock=clock)
    with pytest.raises(StopWaiting):
        sink.build_part("out", "0", None)
    assert (REGISTRY.get_sample_value("enrich_sink_retries_total") or 0.0) - retries == 7
    assert clock.pauses[4:] == [pytest.approx(30.0)] * 2, "open after five, a probe failed"
    assert REGISTRY.get_sample_value("enrich_sink_circuit_state", {"partition": "0"}) == 1
