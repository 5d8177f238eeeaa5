"""SQL text for reading the reference table, built only from checked identifiers.

Names come from settings, so each is held to a strict pattern before it is
quoted into a statement; the one value a statement takes, the watermark, is a
named bind (`:watermark`, which both sqlite3 and python-oracledb accept). The
filter is never rendered here: it is evaluated in Python on the rows read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Database = Literal["sqlite", "oracle"]

_NAME = r"[A-Za-z][A-Za-z0-9_]{0,127}"
_COLUMN = re.compile(rf"{_NAME}")
_TABLE = re.compile(rf"(?:{_NAME}\.)?{_NAME}")
WATERMARK = "watermark"
"""The bind name of the watermark."""


def check_column(name: str) -> str:
    if not _COLUMN.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid column name (letters, digits, underscore; "
            "starts with a letter; at most 128 characters)"
        )
    return name


def check_table(name: str) -> str:
    if not _TABLE.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid table name (TABLE or OWNER.TABLE; letters, digits, "
            "underscore; each part starts with a letter; at most 128 characters)"
        )
    return name


def quote(name: str, database: Database) -> str:
    """Oracle folds unquoted names to upper case, so a quoted one must be upper case to match."""
    parts = name.split(".")
    if database == "oracle":
        parts = [part.upper() for part in parts]
    return ".".join(f'"{part}"' for part in parts)


@dataclass(frozen=True)
class ReferenceQuery:
    """The two reads of a load: the whole table, and the rows changed after the watermark.

    The incremental read is ordered by the change column, so a watermark can
    be advanced to a value once every row holding it has been delivered.
    """

    database: Database
    table: str
    columns: Sequence[str]
    change_column: str

    def __post_init__(self) -> None:
        check_table(self.table)
        for name in (*self.columns, self.change_column):
            check_column(name)
        if self.change_column not in self.columns:
            raise ValueError(f"the change column {self.change_column!r} must be selected")

    def _select(self) -> str:
        names = ", ".join(quote(name, self.database) for name in self.columns)
        return f"SELECT {names} FROM {quote(self.table, self.database)}"

    def full(self) -> str:
        return self._select()

    def changed_since(self) -> str:
        change = quote(self.change_column, self.database)
        return f"{self._select()} WHERE {change} > :{WATERMARK} ORDER BY {change}"
