"""One quoting and one table builder for every statement the product writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from operators.identifiers import quote
from reference.query import ReferenceQuery
from sinks.oracle import _TYPES as ORACLE_TYPES
from sinks.oracle import OracleDialect, merge_sql
from sinks.sql import bound_columns, create_statements, stamped_columns
from sinks.sqlite import _TYPES as SQLITE_TYPES
from sinks.sqlite import SqliteDialect, upsert_sql
from sinks.table import DeadLetterTable, EnrichedTable

TABLE = EnrichedTable("Quotes", (("price", "float"),), (("name", "str"),), frozenset())


@pytest.mark.parametrize(
    ("name", "sqlite", "oracle"),
    [
        ("quotes", '"quotes"', '"QUOTES"'),
        ("Ref.Securities", '"Ref"."Securities"', '"REF"."SECURITIES"'),
    ],
)
def test_one_quoting_for_both_databases(name: str, sqlite: str, oracle: str) -> None:
    assert quote(name, "sqlite") == sqlite
    assert quote(name, "oracle") == oracle


def test_the_sinks_and_the_publisher_quote_alike() -> None:
    query = ReferenceQuery("oracle", "Ref.Securities", ("security_id", "updated_at"), "updated_at")
    assert query.full() == 'SELECT "SECURITY_ID", "UPDATED_AT" FROM "REF"."SECURITIES"'
    assert f"MERGE INTO {quote('Quotes', 'oracle')} t" in merge_sql(TABLE)
    assert f"INSERT INTO {quote('Quotes', 'sqlite')} (" in upsert_sql(TABLE)


def test_bound_and_stamped_columns_split_the_schema_in_order() -> None:
    letters = DeadLetterTable()
    names = [column.name for column in letters.schema()]
    assert bound_columns(letters) + stamped_columns(letters) == [
        *(n for n in names if n not in stamped_columns(letters)),
        *stamped_columns(letters),
    ]
    assert stamped_columns(letters) == ["dead_lettered_at"]


def test_both_dialects_create_through_one_builder() -> None:
    sqlite = SqliteDialect(Path("never-opened.sqlite"))
    oracle = OracleDialect.__new__(OracleDialect)  # DDL needs no connection settings
    assert sqlite.create_statements(TABLE) == create_statements(
        TABLE, "sqlite", SQLITE_TYPES, if_not_exists=True
    )
    assert oracle.create_statements(TABLE) == create_statements(
        TABLE, "oracle", ORACLE_TYPES, if_not_exists=False
    )
    [create, *indexes] = oracle.create_statements(TABLE)
    assert create.startswith('CREATE TABLE "QUOTES" ("EVENT_ID" VARCHAR2(1000 CHAR) PRIMARY KEY')
    assert all(index.startswith('CREATE INDEX "QUOTES_') for index in indexes)
