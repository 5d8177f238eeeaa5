"""The columns the publisher's settings name, held against the table's own before a load.

A name the table lacks must stop the publisher, never become a clean "no":
SQLite reads a double-quoted name it does not know as a string literal, so a
misspelt filter field matches no row and a full load would tombstone every
live key. The table's columns come from the description of a query that
returns no row, so SQLite and Oracle are asked the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from difflib import get_close_matches

from config.base import ENV_PREFIX, SettingsError
from reference.query import Database, quote
from reference.settings import ReferenceTableSettings
from reference.source import ReadConnection


class UnknownColumns(SettingsError):
    """A column named by a publisher setting is not in the table: a settings error (exit 2)."""


def named_columns(settings: ReferenceTableSettings) -> Iterator[tuple[str, str]]:
    """Every (setting, column) pair the settings name, in the order a reader checks them."""
    yield "publish_key_column", settings.publish_key_column
    for name in settings.publish_columns:
        yield "publish_columns", name
    yield "publish_change_column", settings.publish_change_column
    if settings.publish_soft_delete_column is not None:
        yield "publish_soft_delete_column", settings.publish_soft_delete_column
    for condition in settings.publish_filter:
        yield "publish_filter", condition.field


def table_columns(connection: ReadConnection, database: Database, table: str) -> list[str]:
    """The table's column names as the database spells them; reads no row."""
    cursor = connection.cursor()
    try:
        cursor.execute(f"SELECT * FROM {quote(table, database)} WHERE 1 = 0", {})
        return [column[0] for column in cursor.description or ()]
    finally:
        cursor.close()


def _spelling(name: str, database: Database) -> str:
    """How a checked name compares with the database's own spelling of a column.

    Oracle: `quote` makes the name upper case, so it must match that exactly;
    SQLite compares column names without regard to ASCII case.
    """
    return name.upper() if database == "oracle" else name.lower()


def missing_columns(
    settings: ReferenceTableSettings, columns: Sequence[str]
) -> list[tuple[str, str]]:
    """The (setting, column) pairs whose column is not among `columns`."""
    database = settings.publish_database
    present = {column if database == "oracle" else column.lower() for column in columns}
    return [
        (setting, name)
        for setting, name in named_columns(settings)
        if _spelling(name, database) not in present
    ]


def check_columns(settings: ReferenceTableSettings, connection: ReadConnection) -> None:
    """Raise UnknownColumns naming each setting whose column the table lacks."""
    columns = table_columns(connection, settings.publish_database, settings.publish_table)
    missing = missing_columns(settings, columns)
    if not missing:
        return
    by_lower = {column.lower(): column for column in columns}
    lines = []
    for setting, name in missing:
        nearest = get_close_matches(name.lower(), list(by_lower), n=1)
        hint = f"; did you mean {by_lower[nearest[0]]!r}?" if nearest else ""
        lines.append(
            f"  {ENV_PREFIX}{setting.upper()}: column {name!r} is not in table "
            f"{settings.publish_table!r}{hint}"
        )
    raise UnknownColumns(
        "invalid settings:\n"
        + "\n".join(lines)
        + f"\n  the table's columns: {', '.join(columns)}; nothing was read or published"
    )
