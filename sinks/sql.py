"""The SQL both dialects build alike: the bound and stamped columns, the tables and indexes.

Each dialect keeps only what differs (its types, its upsert statement); names
are quoted by `operators.identifiers.quote`, the one quoting of the product.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from operators.identifiers import Database, quote
from sinks.table import ColumnType, Table, index_name


def bound_columns(table: Table) -> list[str]:
    """The columns a row's values bind to, in schema order: all but the stamped ones."""
    return [column.name for column in table.schema() if column.type != "timestamp"]


def stamped_columns(table: Table) -> list[str]:
    """The columns the database stamps with the time of the write."""
    return [column.name for column in table.schema() if column.type == "timestamp"]


def overwrite_condition(table: Table, database: Database, target: str, incoming: str) -> str:
    """The upsert's WHERE: a row is overwritten by a copy that arrived no earlier.

    `target` and `incoming` name the stored and the new row as the dialect's
    upsert does. A row without a number (written before the column existed,
    see docs/OPERATIONS.md) is always overwritten. Empty when the table has
    no order column.
    """
    if table.order is None:
        return ""
    column = quote(table.order, database)
    return f" WHERE {target}.{column} IS NULL OR {incoming}.{column} >= {target}.{column}"


def create_statements(
    table: Table, database: Database, types: Mapping[ColumnType, str], if_not_exists: bool
) -> list[str]:
    """CREATE TABLE with the key and NOT NULLs, then one CREATE INDEX per indexed column."""
    exists = " IF NOT EXISTS" if if_not_exists else ""
    name = quote(table.name, database)
    columns = ", ".join(
        f"{quote(column.name, database)} {types[column.type]}"
        + (" PRIMARY KEY" if column.name == table.key else "")
        + ("" if column.nullable else " NOT NULL")
        for column in table.schema()
    )
    return [
        f"CREATE TABLE{exists} {name} ({columns})",
        *(
            f"CREATE INDEX{exists} {quote(index_name(table.name, column), database)} "
            f"ON {name} ({quote(column, database)})"
            for column in table.indexed()
        ),
    ]


def columns_probe(table: Table, database: Database) -> str:
    """A query that returns no row, whose description names the table's columns as it is."""
    return f"SELECT * FROM {quote(table.name, database)} WHERE 1 = 0"


def missing_columns(conn: Any, table: Table, database: Database) -> list[str]:
    """The columns of `table.schema()` an existing table lacks (created by an earlier version).

    Names compare without regard to case: SQLite ignores it, and Oracle reports
    unquoted names in upper case.
    """
    cursor = conn.cursor()
    try:
        cursor.execute(columns_probe(table, database))
        present = {str(column[0]).lower() for column in cursor.description or ()}
    finally:
        cursor.close()
    return [column.name for column in table.schema() if column.name.lower() not in present]
