"""The fast path of event decoding: one parse in C, then checks specialised to the settings.

Decoding an event through pydantic (`operators.decode`) costs about 3 µs;
most of it is the parse and a general schema walk. Here msgspec parses, at
about half pydantic-core's cost (it refuses overflowing literals such as
1e400, which pydantic-core reads as infinity, and keeps integers beyond 64
bits exact, which orjson turns into floats), and a function built once from
the settings checks the few declared fields by exact type and range
(`bench/bench_decode.py` measures it against the alternatives).

It vouches only for events it can prove the checked path accepts, and then
returns exactly the `Event` that path would build; for anything else it
returns None and the checked path decides, with its own reasons and
messages. So every rule keeps one definition (the checked path), and the fast
path is only ever a shortcut to the same answer; tests compare the two on
arbitrary JSON and bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from operators.limits import MAX_INT, MAX_TEXT, MAX_TIME, MIN_INT, MIN_TIME
from operators.records import Event, FieldType
from operators.times import epoch_seconds

_new = tuple.__new__
_parse = msgspec.json.Decoder().decode

MAX_DEPTH = 200
"""pydantic-core's parser refuses JSON nested deeper than about 200 levels and
msgspec's allows more; a document with at most this many `{` and `[` bytes
(in strings too) cannot be too deep for either, so the two agree on it."""

_SHALLOW_BYTES = 2 * MAX_DEPTH
"""Each level of nesting takes an opening and a closing byte, so JSON this short
cannot nest deeper than `MAX_DEPTH`: counting brackets (0.2 µs) is skipped."""

_EXACT_FLOAT = 2**53
"""Integers up to this magnitude convert to float exactly, as pydantic converts them."""

_PLAIN_TIME = re.compile(
    r"\d{4}-\d\d-\d\d[T ](?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)?",
    re.ASCII,
).fullmatch
"""The common shape of a text time (RFC 3339, `T` or a space between date and
time, at most microseconds), whose fields are each within range as pydantic's
parser requires; the calendar (a 30th of February, year 0) is
`datetime.fromisoformat`'s to refuse, as it is pydantic's. Any other text,
numeric strings and leap seconds included, goes to pydantic."""


def text_time(text: str) -> float | None:
    """Epoch seconds of a text time in the common shape and range, else None."""
    if _PLAIN_TIME(text) is None:
        return None
    try:
        seconds = epoch_seconds(datetime.fromisoformat(text))
    except ValueError:
        return None
    return seconds if MIN_TIME <= seconds <= MAX_TIME else None


_NUMBER_TEXT = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?", re.ASCII).fullmatch
_INTEGER_TEXT = re.compile(r"-?(?:0|[1-9]\d{0,18})", re.ASCII).fullmatch
"""A number sent as text, as many producers send decimals: for a declared `float`
or `int` field, text in JSON's own number syntax is the number pydantic makes of
it (both round correctly); other spellings (`" 1.5"`, `"1_0"`, `"+1"`) go to it."""

_TYPES: dict[FieldType, type] = {"str": str, "int": int, "float": float, "bool": bool}


FastDecode = Callable[[bytes | None, str, int], Event | None]
"""Bytes, origin and arrival number to the event, or None where the checked path must decide."""


def fast_events(
    lookup_field: str,
    event_id_field: str,
    event_time_field: str,
    event_fields: dict[str, FieldType],
    max_record_bytes: int,
) -> FastDecode | None:
    """The fast decoder for these settings, or None where it does not apply.

    It applies when the four kinds of field names are distinct (settings
    refuse overlaps; a hand-built decoder may not), so each value meets one
    rule. Everything it needs is bound here, once: the function reads no
    attribute per event.
    """
    own = {lookup_field, event_id_field, event_time_field}
    if len(own) != 3 or own & set(event_fields):
        return None
    fields = tuple((name, _TYPES[kind]) for name, kind in event_fields.items())

    def decode(value: bytes | None, origin: str, seq: int) -> Event | None:
        if value is None or len(value) > max_record_bytes:
            return None
        if len(value) > _SHALLOW_BYTES and value.count(b"{") + value.count(b"[") > MAX_DEPTH:
            return None
        try:
            obj = _parse(value)
        except ValueError:  # msgspec's errors, not UTF-8 included: the checked path says which
            return None
        if type(obj) is not dict:
            return None
        lookup_id: Any = obj.get(lookup_field)
        kind = type(lookup_id)
        if kind is str:
            if not 0 < len(lookup_id) <= MAX_TEXT:
                return None
        elif kind is int and MIN_INT <= lookup_id <= MAX_INT:  # type(True) is bool, not int
            lookup_id = str(lookup_id)
        else:
            return None
        event_id: Any = obj.get(event_id_field)
        kind = type(event_id)
        if event_id is None:
            event_id = origin
        elif kind is str:
            if not 0 < len(event_id) <= MAX_TEXT:
                return None
        elif kind is int and MIN_INT <= event_id <= MAX_INT:
            event_id = str(event_id)
        else:
            return None
        event_time: Any = obj.get(event_time_field)
        kind = type(event_time)
        if kind is float or kind is int:
            # msgspec yields no NaN or infinity; a time in range is an exact float.
            if not MIN_TIME <= event_time <= MAX_TIME:
                return None
            event_time = float(event_time)
        elif kind is str:
            event_time = text_time(event_time)
            if event_time is None:
                return None
        elif event_time is not None:
            return None
        for name, declared in fields:
            item: Any = obj.get(name)
            if item is None:
                continue
            kind = type(item)
            if kind is declared:
                if kind is int:
                    if not MIN_INT <= item <= MAX_INT:
                        return None
                elif kind is str and len(item) > MAX_TEXT:
                    return None
            elif declared is float and kind is int and -_EXACT_FLOAT <= item <= _EXACT_FLOAT:
                obj[name] = float(item)
            elif kind is str and declared is float and _NUMBER_TEXT(item):
                number = float(item)
                if number - number != 0.0:  # overflowed to infinity: pydantic refuses it
                    return None
                obj[name] = number
            elif kind is str and declared is int and _INTEGER_TEXT(item):
                number = int(item)
                if not MIN_INT <= number <= MAX_INT:
                    return None
                obj[name] = number
            else:
                return None
        # tuple.__new__ skips the NamedTuple constructor's Python frame.
        return _new(Event, (event_id, lookup_id, event_time, obj, origin, (), seq))

    return decode
