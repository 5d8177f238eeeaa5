"""The sink against a real Oracle Database, when one is configured; skipped otherwise.

    ORACLE_DSN=localhost:1521/FREEPDB1 ORACLE_USER=enrich ORACLE_PASSWORD=... \\
        pytest tests/test_oracle_sink.py

(README.md, "Oracle", shows how to start Oracle Database Free in a container
and create that user.) Every test writes to tables of its own, with a random
suffix, and drops them afterwards.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import oracledb
import pytest
from faults import FakeClock
from prometheus_client import REGISTRY
from pydantic import SecretStr

from config.connections import OracleConnection
from operators.records import Event, Joined, MissReason, Status
from sinks.oracle import OracleDialect
from sinks.schema import create_tables
from sinks.table import DeadLetterTable, EnrichedTable
from sinks.upsert import UpsertSink

pytestmark = pytest.mark.skipif(
    not all(os.environ.get(name) for name in ("ORACLE_DSN", "ORACLE_USER", "ORACLE_PASSWORD")),
    reason="ORACLE_DSN/ORACLE_USER/ORACLE_PASSWORD not set: no Oracle database to test against",
)


def enriched(
    event_id: str,
    *,
    name: str | None = "Alpha",
    cusip: str = "C1",
    date: str | None = "2024-01-02",
    status: Status = Status.ENRICHED,
    **extra: Any,
) -> Joined:
    fields = {"event_id": event_id, "security_id": "A", "ts": 1.5, "price": 9.5, "size": 7}
    fields |= {"urgent": True, "date": date, **extra}
    event = Event(event_id, "A", 1.5, fields, f"test/event/0/{event_id}")
    if status is Status.LOOKUP_MISS:
        return Joined(event, None, None, status, MissReason.TIMEOUT, 5000.0)
    return Joined(event, (cusip, name, 3), 3, status, None, 0.0)


@pytest.fixture(scope="module")
def dialect() -> OracleDialect:
    settings = OracleConnection(
        oracle_user=os.environ["ORACLE_USER"],
        oracle_password=SecretStr(os.environ["ORACLE_PASSWORD"]),
        oracle_dsn=os.environ["ORACLE_DSN"],
    )
    return OracleDialect.from_settings(settings, pool_min=1, pool_max=4)


def query(dialect: OracleDialect, sql: str, *binds: Any) -> list[tuple[Any, ...]]:
    """Rows with CLOBs read into strings."""
    conn = dialect.connect()
    try:
        cursor = conn.cursor()
        cursor.execute(sql, binds)
        return [
            tuple(value.read() if isinstance(value, oracledb.LOB) else value for value in row)
            for row in cursor.fetchall()
        ]
    finally:
        conn.close()


def execute(dialect: OracleDialect, sql: str) -> None:
    conn = dialect.connect()
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


@pytest.fixture
def tables(dialect: OracleDialect) -> Iterator[tuple[EnrichedTable, DeadLetterTable]]:
    """A table with reserved words for column names (SIZE, DATE), and its dead-letter table."""
    suffix = uuid.uuid4().hex[:8]
    table = EnrichedTable(
        name=f"enriched_{suffix}",
        event_columns=(("price", "float"), ("size", "int"), ("urgent", "bool"), ("date", "str")),
        reference_columns=(("cusip", "str"), ("name", "str")),
        unstored_fields=frozenset({"event_id", "security_id", "ts"}),
        lookup_index=True,
    )
    letters = DeadLetterTable(f"dead_{suffix}")
    yield table, letters
    for name in (table.name, letters.name):
        with suppress(oracledb.DatabaseError):
            execute(dialect, f'DROP TABLE "{name.upper()}" PURGE')


def write(
    dialect: OracleDialect,
    tables: tuple[EnrichedTable, DeadLetterTable],
    *batches: list[Joined],
    clock: FakeClock | None = None,
) -> None:
    table, letters = tables
    upsert = UpsertSink(dialect, table, 1, 100, dead_letters=letters, clock=clock or FakeClock())
    partition = upsert.build_part("out", "0", None)
    try:
        for batch in batches:
            partition.write_batch([[table.rows.of(rec) for rec in batch]])
    finally:
        partition.close()


def stored(dialect: OracleDialect, table: EnrichedTable) -> dict[str, dict[str, Any]]:
    columns = ", ".join(f'"{name.upper()}"' for name in table.columns())
    rows = query(dialect, f'SELECT {columns} FROM "{table.name.upper()}"')
    return {row[0]: dict(zip(table.columns(), row, strict=True)) for row in rows}


def letters_of(dialect: OracleDialect, letters: DeadLetterTable) -> list[tuple[Any, ...]]:
    return query(
        dialect,
        'SELECT "ORIGIN", "REASON", "CODE", "DETAIL", "EVENT_ID", "LOOKUP_ID", "PAYLOAD", '
        f'"DEAD_LETTERED_AT" FROM "{letters.name.upper()}" ORDER BY "ORIGIN"',
    )


def test_tables_are_created_once_with_key_index_and_types(
    dialect: OracleDialect, tables: tuple[EnrichedTable, DeadLetterTable]
) -> None:
    table, letters = tables
    create_tables(dialect, table, letters)
    create_tables(dialect, table, letters)
    columns = {
        name: (data_type, char_length, nullable)
        for name, data_type, char_length, nullable in query(
            dialect,
            "SELECT column_name, data_type, char_length, nullable FROM user_tab_columns "
            "WHERE table_name = :1",
            table.name.upper(),
        )
    }
    assert columns["EVENT_ID"] == ("VARCHAR2", 1000, "N")
    assert columns["LOOKUP_ID"] == ("VARCHAR2", 1000, "N")
    assert columns["EVENT_TIME"][0] == "BINARY_DOUBLE"
    assert columns["SIZE"][0] == "NUMBER"
    assert columns["URGENT"][0] == "NUMBER"
    assert columns["DATE"] == ("VARCHAR2", 1000, "Y")
    assert columns["ATTRIBUTES"][0] == "CLOB"
    keys = query(
        dialect,
        "SELECT c.table_name, cc.column_name FROM user_constraints c "
        "JOIN user_cons_columns cc ON cc.constraint_name = c.constraint_name "
        "WHERE c.constraint_type = 'P' AND c.table_name IN (:1, :2) ORDER BY 1",
        table.name.upper(),
        letters.name.upper(),
    )
    assert sorted(keys) == sorted(
        [(table.name.upper(), "EVENT_ID"), (letters.name.upper(), "ORIGIN")]
    )
    indexed = query(
        dialect,
        "SELECT column_name FROM user_ind_columns WHERE table_name = :1",
        table.name.upper(),
    )
    assert ("LOOKUP_ID",) in indexed
    conn = dialect.connect()
    try:
        for statement in dialect.create_statements(table):
            with pytest.raises(oracledb.DatabaseError) as raised:
                conn.cursor().execute(statement)
            assert dialect.already_exists(raised.value)
    finally:
        conn.close()


def test_merge_inserts_then_overwrites_every_column(
    dialect: OracleDialect, tables: tuple[EnrichedTable, DeadLetterTable]
) -> None:
    table, _ = tables
    write(
        dialect,
        tables,
        [enriched("e1", venue="X"), enriched("e2"), enriched("e1", name="Second", venue="Y")],
        [enriched("e2", status=Status.LOOKUP_MISS), enriched("e3")],
    )
    rows = stored(dialect, table)
    assert sorted(rows) == ["e1", "e2", "e3"]
    assert (rows["e1"]["name"], rows["e1"]["attributes"]) == ("Second", '{"venue":"Y"}')
    miss = rows["e2"]
    assert (miss["status"], miss["miss_reason"], miss["waited_ms"]) == (
        "lookup_miss",
        "timeout",
        5000.0,
    )
    assert (miss["cusip"], miss["name"], miss["ref_version"]) == (None, None, None)


def test_an_earlier_copy_never_overwrites_a_later_one(
    dialect: OracleDialect, tables: tuple[EnrichedTable, DeadLetterTable]
) -> None:
    """The MERGE's WHERE on `arrival_seq`, as tests/test_sinks.py checks it on SQLite: late
    copies leave the chain by the segments and hits by the join, in either order."""
    table, _ = tables

    def arrived(rec: Joined, seq: int) -> Joined:
        return rec._replace(event=rec.event._replace(seq=seq))

    later, earlier = (
        arrived(enriched("e1", name="Later"), 7),
        arrived(enriched("e1", status=Status.LOOKUP_MISS), 5),
    )
    write(dialect, tables, [later], [earlier])
    write(dialect, tables, [arrived(enriched("e2", name="Later"), 9)])
    write(dialect, tables, [arrived(enriched("e2", status=Status.LOOKUP_MISS), 8)])
    rows = stored(dialect, table)
    assert (rows["e1"]["name"], rows["e1"]["arrival_seq"]) == ("Later", 7)
    assert (rows["e2"]["name"], rows["e2"]["arrival_seq"]) == ("Later", 9)
    write(dialect, tables, [arrived(enriched("e1", name="Again"), 7)])
    write(dialect, tables, [arrived(enriched("e2", status=Status.LOOKUP_MISS), 10)])
    rows = stored(dialect, table)
    assert rows["e1"]["name"] == "Again"
    assert (rows["e2"]["status"], rows["e2"]["arrival_seq"]) == ("lookup_miss", 10)


def test_types_survive_the_round_trip(
    dialect: OracleDialect, tables: tuple[EnrichedTable, DeadLetterTable]
) -> None:
    table, _ = tables
    long_json = {"notes": "ü" * 3000}
    rec = enriched("e1", name="Zürich ✓", date=None, **long_json)._replace(version=2**40)
    rec = rec._replace(event=rec.event._replace(fields={**rec.event.fields, "size": 2**62}))
    nulls = enriched("e2", name=None)
    nulls = nulls._replace(event=nulls.event._replace(event_time=None))
    write(dialect, tables, [nulls, rec])
    rows = stored(dialect, table)
    row = rows["e1"]
    assert (row["price"], row["size"], row["urgent"]) == (9.5, 2**62, 1)
    assert (row["name"], row["date"], row["ref_version"]) == ("Zürich ✓", None, 2**40)
    assert json.loads(row["attributes"]) == long_json
    assert (rows["e2"]["name"], rows["e2"]["event_time"]) == (None, None)


def test_versions_read_back_exactly(
    dialect: OracleDialect, tables: tuple[EnrichedTable, DeadLetterTable]
) -> None:
    """BINARY_DOUBLE gave 9223372036854775807 back as 9.223372036854776e18."""
    table, _ = tables
    versions = {
        "max": 2**63 - 1,
        "min": -(2**63),
        "fraction": 1_700_000_000.25,
        "small": 0.1,
        "tiny": 1e-130,
    }
    write(dialect, tables, [enriched(name)._replace(version=v) for name, v in versions.items()])
    rows = stored(dialect, table)
    assert {name: rows[name]["ref_version"] for name in versions} == versions
    [(data_type, precision)] = query(
        dialect,
        "SELECT data_type, data_precision FROM user_tab_columns "
        "WHERE table_name = :1 AND column_name = 'REF_VERSION'",
        table.name.upper(),
    )
    assert (data_type, precision) == ("NUMBER", None)


def test_refused_rows_go_to_the_dead_letter_table_with_their_ora_code(
    dialect: OracleDialect, tables: tuple[EnrichedTable, DeadLetterTable]
) -> None:
    table, letters = tables
    create_tables(dialect, table, letters)
    execute(dialect, f'ALTER TABLE "{table.name.upper()}" MODIFY ("NAME" NOT NULL)')
    execute(dialect, f'ALTER TABLE "{table.name.upper()}" MODIFY ("CUSIP" NUMBER)')
    rejected = REGISTRY.get_sample_value("enrich_dead_letters_total", {"reason": "db_rejected"})
    batch = [
        enriched("good1", cusip="123"),
        enriched("too_long", cusip="1", date="d" * 1001),
        enriched("null_name", cusip="2", name=None),
        enriched("bad_number", cusip="C1"),
        enriched("good2", cusip="456"),
    ]
    write(dialect, tables, batch)
    first = stored(dialect, table), letters_of(dialect, letters)
    assert sorted(first[0]) == ["good1", "good2"]
    codes = {row[4]: row[2] for row in first[1]}
    assert codes == {"too_long": "ORA-12899", "null_name": "ORA-01400", "bad_number": "ORA-01722"}
    for origin, reason, code, detail, event_id, lookup_id, payload, at in first[1]:
        assert (origin, reason, lookup_id) == (f"test/event/0/{event_id}", "db_rejected", "A")
        assert detail.startswith(code)
        assert json.loads(payload)["event_id"] == event_id
        assert at is not None
    too_long = next(row[6] for row in first[1] if row[4] == "too_long")
    assert json.loads(too_long)["date"] == "d" * 1001, "the payload keeps the value whole"
    after = REGISTRY.get_sample_value("enrich_dead_letters_total", {"reason": "db_rejected"})
    assert (after or 0) - (rejected or 0) == 3

    write(dialect, tables, batch)
    assert (stored(dialect, table), letters_of(dialect, letters)) == first


def test_a_missing_table_is_a_permanent_error_not_retried(
    dialect: OracleDialect, tables: tuple[EnrichedTable, DeadLetterTable]
) -> None:
    table, letters = tables
    clock = FakeClock()
    partition = UpsertSink(dialect, table, 1, 100, dead_letters=letters, clock=clock).build_part(
        "out", "0", None
    )
    execute(dialect, f'DROP TABLE "{table.name.upper()}" PURGE')
    with pytest.raises(oracledb.DatabaseError) as raised:
        partition.write_batch([[table.rows.of(enriched("e1"))]])
    partition.close()
    assert raised.value.args[0].code == 942
    assert clock.pauses == []


def test_connect_serves_plain_selects(dialect: OracleDialect) -> None:
    assert query(dialect, "SELECT 1 + :1 FROM dual", 41) == [(42,)]
