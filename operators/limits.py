"""The values every step and both databases can hold: defined once, enforced at decode.

Decode turns a value outside these into a dead letter, so nothing after it
(the join, the sinks, a metric) meets a value it cannot hold, and no
exception after decode comes from a record's content.
"""

from __future__ import annotations

from datetime import UTC, datetime

MIN_INT = -(2**63)
MAX_INT = 2**63 - 1
"""Integers are 64-bit signed: SQLite's INTEGER, and Oracle's NUMBER(19) holds them all."""

MAX_TEXT = 1000
"""Longest `str` value a database with bounded strings must keep, in characters.

Bounded so that a longer value is refused at decode, not a table that silently
grows; 1000 characters of at most 4 bytes fit Oracle's 4000-byte VARCHAR2
whatever the database's MAX_STRING_SIZE."""

MIN_TIME = datetime(1, 1, 2, tzinfo=UTC).timestamp()
MAX_TIME = datetime(9999, 12, 31, tzinfo=UTC).timestamp()
"""Times are epoch seconds from 0001-01-02T00:00:00Z to 9999-12-31T00:00:00Z, both included.

Python's datetime holds years 1 to 9999, SQLite's date functions 0 to 9999 and
Oracle's DATE and TIMESTAMP -4712 to 9999; one day inside the narrowest on each
side, so that turning a time into any time zone's local time stays in range."""


SMALLEST_NUMBER = 1e-130
"""Oracle's NUMBER holds no magnitude below this but zero: a smaller one reads back as 0."""


def version_in_range(value: int | float) -> bool:
    """Whether a numeric version is one both databases hold exactly.

    Within 64-bit signed integers, and, for a float, not so close to zero that
    Oracle's NUMBER rounds it to 0. False for NaN and infinities.
    """
    if not MIN_INT <= value <= MAX_INT:
        return False
    return type(value) is not float or value == 0.0 or abs(value) >= SMALLEST_NUMBER


def time_in_range(seconds: float) -> bool:
    """Whether epoch seconds lie within the times every store holds (False for NaN)."""
    return MIN_TIME <= seconds <= MAX_TIME


TIME_RANGE = "0001-01-02T00:00:00Z to 9999-12-31T00:00:00Z"
"""The time range, as messages state it."""
