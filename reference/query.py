"""SQL text for reading the reference table, built only from checked identifiers.

Names come from settings, so each is held to a strict pattern before it is
quoted into a statement; the one value a statement takes, the watermark, is a
named bind (`:watermark`, which both sqlite3 and python-oracledb accept). The
filter is never rendered here: it is evaluated in Python on the rows read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from operators.identifiers import Database, check_identifier, check_qualified, quote

__all__ = ["WATERMARK", "Database", "ReferenceQuery", "check_column", "check_table", "quote"]

WATERMARK = "watermark"
"""The bind name of the watermark."""


def check_column(name: str) -> str:
    return check_identifier(name, "column name")


def check_table(name: str) -> str:
    return check_qualified(name, "table name")


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
