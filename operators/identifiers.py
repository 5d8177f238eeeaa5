"""The one rule for names that settings quote into SQL, and "did you mean" for mistyped names.

Every program checks table and column names here before a dialect quotes
them, so a name either is an identifier in every database the product writes
or is refused at start. The whole string must match: `re.match` with `$` lets
a trailing newline through, and `\\w`/`\\d` would let other scripts' letters
and digits through.

The length limit is 128 characters, Oracle's since 12.2 (12.1 allowed 30):
12.1 is out of every support since 2022, every later release and SQLite take
128, and a reference table on a current database may well have a longer
name. The rule allows ASCII only, so 128 characters are 128 bytes, the unit
Oracle counts in. A database still set to `COMPATIBLE < 12.2` refuses a name
of more than 30 characters when the table is created (ORA-00972), loudly.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Literal

MAX_LENGTH = 128
"""Longest identifier, in characters (which are bytes: the rule allows ASCII only)."""

_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*", re.ASCII)


def is_identifier(name: object) -> bool:
    """Letters, digits and underscores, starting with a letter, at most `MAX_LENGTH` long."""
    if not isinstance(name, str) or len(name) > MAX_LENGTH:
        return False
    return _IDENTIFIER.fullmatch(name) is not None


def check_identifier(name: str, what: str) -> str:
    """`name` if it is an identifier, else a ValueError that says what the name is for."""
    if not is_identifier(name):
        raise ValueError(
            f"{name!r} is not a valid {what} (ASCII letters, digits and underscore; "
            f"starts with a letter; at most {MAX_LENGTH} characters)"
        )
    return name


def check_qualified(name: str, what: str) -> str:
    """`NAME` or `OWNER.NAME`, each part an identifier."""
    parts = name.split(".")
    if len(parts) > 2 or not all(is_identifier(part) for part in parts):
        raise ValueError(
            f"{name!r} is not a valid {what} (NAME or OWNER.NAME; each part ASCII letters, digits "
            f"and underscore, starts with a letter, at most {MAX_LENGTH} characters)"
        )
    return name


Database = Literal["sqlite", "oracle"]


def quote(name: str, database: Database) -> str:
    """A checked `NAME` or `OWNER.NAME`, quoted for `database`: every statement's one quoting.

    Oracle folds unquoted names to upper case, so a quoted one must be upper
    case to match a table created without quotes. Only names this module
    checked may be quoted: none holds a quote character.
    """
    parts = name.split(".")
    if database == "oracle":
        parts = [part.upper() for part in parts]
    return ".".join(f'"{part}"' for part in parts)


def nearest(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to a mistyped one, for a "did you mean"; None if none is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return close[0] if close else None
