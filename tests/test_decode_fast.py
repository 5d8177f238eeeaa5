"""The fast path of event decoding gives exactly the checked path's answer, or none.

`operators.fast_events` parses with msgspec, where the checked path parses with
pydantic-core; the two parsers disagree on some inputs (how deep they nest,
overflowing literals such as 1e400; orjson, measured too, also on big
integers), and the fast path coerces a few types itself (integers for floats,
numbers and times sent as text). Each such edge, and arbitrary JSON and bytes,
must decode to the same records with the same types, dead letters included,
and the common event must actually take the fast path.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_decode_properties import TIMES, document_bytes, event_documents

from operators.decode import Decoder, ReferenceSchema, decode_batch
from operators.fast_events import MAX_DEPTH, fast_events
from operators.filters import Condition, all_of
from operators.records import Event, Kind, RawRecord
from sources.demo import DemoConfig, build_plan

FAST = Decoder(
    lookup_field="security_id",
    event_id_field="event_id",
    event_time_field="ts",
    event_fields={"price": "float", "size": "int", "venue": "str", "urgent": "bool"},
    references={"security": ReferenceSchema({"cusip": "str"}, "version")},
    max_record_bytes=64_000,
)
CHECKED = dataclasses.replace(FAST, fast_path=False)
FILTERED = dataclasses.replace(FAST, keep_event=all_of([Condition(field="price", op=">", value=1)]))
FILTERED_CHECKED = dataclasses.replace(FILTERED, fast_path=False)


def typed(value: Any) -> Any:
    """`value` with every type spelt out: 1, 1.0 and True, or 0.0 and -0.0, differ."""
    if isinstance(value, dict):
        return ("dict", [(key, typed(item)) for key, item in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [typed(item) for item in value])
    if type(value) is float:
        return ("float", value.hex())
    return (type(value).__name__, value)


def event(value: bytes | None) -> RawRecord:
    return RawRecord(Kind.EVENT, None, value, "events/0/7")


def same_both_ways(value: bytes | None, fast: Decoder = FAST, checked: Decoder = CHECKED) -> Any:
    """The record both paths make of `value`, after checking they make the same."""
    raw = event(value)
    result = fast.decode(raw, 5)
    assert typed(result) == typed(checked.decode(raw, 5))
    assert typed(decode_batch(fast, "security", [raw], 5)) == typed(
        decode_batch(checked, "security", [raw], 5)
    )
    return result


def nested(depth: int, inner: bytes = b"1") -> bytes:
    return b'{"security_id":"S","x":' + b"[" * (depth - 1) + inner + b"]" * (depth - 1) + b"}"


EDGES = [
    # Integers: orjson turns those beyond 64 bits into floats; msgspec and pydantic keep them.
    b'{"security_id":"S","extra":18446744073709551616}',
    b'{"security_id":"S","extra":18446744073709551615}',
    b'{"security_id":"S","extra":-9223372036854775809}',
    b'{"security_id":"S","size":9223372036854775808}',
    b'{"security_id":"S","size":-9223372036854775808}',
    b'{"security_id":9223372036854775807,"event_id":-9223372036854775808}',
    b'{"security_id":9223372036854775808}',
    b'{"security_id":"S","extra":' + b"7" * 200 + b"}",
    b'{"security_id":"S","extra":' + b"7" * 5000 + b"}",
    # Overflowing and vanishing numbers, signed zeros.
    b'{"security_id":"S","extra":1e400}',
    b'{"security_id":"S","extra":[-1e400]}',
    b'{"security_id":"S","price":1e-400,"extra":-1e-400}',
    b'{"security_id":"S","price":-0,"ts":-0.0,"extra":-0}',
    b'{"security_id":"S","price":-0.0,"ts":-0}',
    b'{"security_id":"S","price":1.7976931348623157e308}',
    b'{"security_id":"S","price":1.7976931348623159e308}',
    b'{"security_id":"S","extra":NaN}',
    b'{"security_id":"S","extra":-Infinity}',
    # Types the fast path leaves to pydantic's coercion or refusal.
    b'{"security_id":"S","price":9007199254740993}',
    b'{"security_id":"S","price":9007199254740992,"size":-9007199254740993}',
    b'{"security_id":"S","price":"1.5","size":"2","urgent":"yes"}',
    b'{"security_id":"S","size":2.0,"urgent":1}',
    b'{"security_id":"S","price":true}',
    # Numbers sent as text: JSON's own number syntax is taken, other spellings go to pydantic.
    b'{"security_id":"S","price":"339.63","size":"300"}',
    b'{"security_id":"S","price":"-0","size":"-0"}',
    b'{"security_id":"S","price":"1e400"}',
    b'{"security_id":"S","price":"1e-400","size":"9223372036854775807"}',
    b'{"security_id":"S","size":"9223372036854775808"}',
    b'{"security_id":"S","size":"-9223372036854775809"}',
    b'{"security_id":"S","size":"' + b"9" * 5000 + b'"}',
    b'{"security_id":"S","price":"0.1000000000000000055511151231257827"}',
    b'{"security_id":"S","price":"2.4703282292062328e-324"}',
    b'{"security_id":"S","price":"9007199254740993","size":"1.0"}',
    b'{"security_id":"S","price":" 1.5","size":"007"}',
    b'{"security_id":"S","price":"1_0","size":"+1"}',
    b'{"security_id":"S","price":"NaN","size":""}',
    b'{"security_id":"S","price":"-","size":"-"}',
    b'{"security_id":"S","price":".5","size":"\\u0661"}',
    b'{"security_id":true}',
    b'{"security_id":""}',
    b'{"security_id":"S","event_id":""}',
    b'{"security_id":"S","event_id":1.5}',
    b'{"security_id":"S","ts":true}',
    b'{"security_id":"S","ts":"2024-01-01T00:00:00"}',
    b'{"security_id":"S","ts":"1700000000"}',
    b'{"security_id":"S","ts":-62135510400}',
    b'{"security_id":"S","ts":-62135510401}',
    b'{"security_id":"S","ts":253402214400.0}',
    b'{"security_id":"S","ts":253402214400.001}',
    b'{"security_id":"S","venue":"' + "ü".encode() * 1000 + b'"}',
    b'{"security_id":"S","venue":"' + b"x" * 1001 + b'"}',
    b'{"security_id":"' + b"y" * 1001 + b'"}',
    # Duplicate keys: the last value wins, at the first one's place.
    b'{"security_id":"S","price":"x","price":2,"security_id":"T"}',
    b'{"security_id":"S","security_id":null}',
    # Unicode: lone surrogates are refused, pairs are one character; not UTF-8 at all.
    b'{"security_id":"\\ud800"}',
    b'{"security_id":"S","extra":"\\udc00"}',
    b'{"security_id":"\\ud83d\\ude00","venue":"\\u0000"}',
    b'{"security_id":"S","extra":"\xed\xa0\x80"}',
    b'{"security_id":"S","extra":"\xff"}',
    b'\xef\xbb\xbf{"security_id":"S"}',
    # Not objects, not JSON, empty, missing.
    b'["security_id"]',
    b'"S"',
    b'{"security_id":"S"} x',
    b' \t\r\n{"security_id":"S"}\n',
    b"",
    None,
    # Nesting: pydantic-core refuses more than about 200 levels, msgspec does not.
    nested(MAX_DEPTH - 1),
    nested(MAX_DEPTH),
    nested(MAX_DEPTH + 1),
    nested(MAX_DEPTH + 50),
    nested(MAX_DEPTH + 1, b'"' + b"p" * 500 + b'"'),
    nested(1, b'"' + b"[" * 300 + b'"'),
    nested(2000),
]


@pytest.mark.parametrize("value", EDGES)
def test_where_the_parsers_or_the_types_differ_both_paths_decode_alike(value: bytes) -> None:
    same_both_ways(value)
    same_both_ways(value, FILTERED, FILTERED_CHECKED)


def test_json_nested_deeper_than_pydantic_allows_stays_invalid_json() -> None:
    for value in (nested(MAX_DEPTH + 50), nested(MAX_DEPTH + 1, b'"' + b"p" * 500 + b'"')):
        result = same_both_ways(value)
        assert result.reason == "invalid_json"
        assert "recursion limit" in result.detail


def test_big_integers_stay_integers_and_overflowing_numbers_stay_dead_letters() -> None:
    kept = same_both_ways(b'{"security_id":"S","extra":18446744073709551616}')
    assert kept.fields["extra"] == 2**64
    overflow = same_both_ways(b'{"security_id":"S","extra":[-1e400]}')
    assert (overflow.reason, overflow.detail.split(":")[0]) == ("invalid_field", "extra.0")


def test_the_filter_on_a_fast_event_sees_coerced_fields_and_reports_a_missing_one() -> None:
    assert same_both_ways(b'{"security_id":"S","price":2}', FILTERED, FILTERED_CHECKED) == Event(
        "events/0/7", "S", None, {"security_id": "S", "price": 2.0}, "events/0/7", (), 5
    )
    assert same_both_ways(b'{"security_id":"S","price":1}', FILTERED, FILTERED_CHECKED) is None
    missing = same_both_ways(b'{"security_id":"S"}', FILTERED, FILTERED_CHECKED)
    assert missing.reason == "filter_field_missing"


TWO_DIGITS = st.sampled_from(
    ["00", "01", "09", "12", "13", "23", "24", "28", "29", "30", "31", "59", "60", "99"]
)
OFFSETS = ["", "Z", "z", "+00:00", "-00:00", "+23:59", "-23:59", "+24:00", "+00:60", "+13:00"]
OFFSETS += ["-05:30", "+0100", "+01", "+01:00:30"]
text_times = st.builds(
    "{}-{}-{}{}{}:{}:{}{}{}".format,
    st.sampled_from(["0000", "0001", "1969", "1970", "2023", "2024", "9999"]),
    TWO_DIGITS,
    TWO_DIGITS,
    st.sampled_from(["T", " ", "t", "_"]),
    TWO_DIGITS,
    TWO_DIGITS,
    TWO_DIGITS,
    st.sampled_from(["", ".", ".5", ".000001", ".123456", ".1234567"]),
    st.sampled_from(OFFSETS),
)


@pytest.mark.parametrize(
    "text",
    [
        *TIMES,
        "2024-02-29T00:00:00",
        "2023-02-29T00:00:00",
        "2024-01-01T00:00:00+00:60",
        "2024-01-01T23:59:60Z",
        "2024-01-01 00:00:00Z",
        "2024-01-01T00:00:00.1234567Z",
        "0001-01-02T00:00:00Z",
        "0001-01-01T23:59:59.999999Z",
        "9999-12-31T00:00:00Z",
        "9999-12-31T00:00:00.000001Z",
        "١٩٧٠-01-01T00:00:00",
    ],
)
def test_text_times_decode_alike_on_both_paths(text: str) -> None:
    same_both_ways(json.dumps({"security_id": "S", "ts": text}).encode())


def test_a_plain_text_time_takes_the_fast_path() -> None:
    fast = fast_events("security_id", "event_id", "ts", {}, 1_000)
    assert fast is not None
    for text, seconds in [
        ("1970-01-01T00:01:00Z", 60.0),
        ("1970-01-01 00:01:00.25", 60.25),
        ("1970-01-01T09:00:00.5+09:00", 0.5),
        ("1970-01-01T00:00:00", 0.0),
    ]:
        event = fast(json.dumps({"security_id": "S", "ts": text}).encode(), "o", 0)
        assert event is not None
        assert event.event_time == seconds


numbers_as_text = st.one_of(
    st.floats().map(repr),
    st.integers().map(str),
    st.from_regex(r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.text(alphabet="0123456789.-+eE_ ", max_size=12),
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(numbers_as_text, numbers_as_text)
def test_numbers_sent_as_text_decode_alike(price: str, size: str) -> None:
    same_both_ways(json.dumps({"security_id": "S", "price": price, "size": size}).encode())
    same_both_ways(json.dumps({"security_id": "S", "price": price}).encode())
    same_both_ways(json.dumps({"security_id": "S", "size": size}).encode())


@settings(max_examples=400, deadline=None, derandomize=True)
@given(text_times)
def test_any_text_time_of_the_common_shape_decodes_alike(text: str) -> None:
    same_both_ways(json.dumps({"security_id": "S", "ts": text}).encode())


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.one_of(document_bytes(event_documents), st.binary(max_size=60)))
def test_any_document_or_bytes_decode_alike_on_both_paths(value: bytes) -> None:
    same_both_ways(value)


NEAR_JSON = b'0123456789-+.eE"\\/u{}[]:, \t\nntfalsrNIy\x00\x1f\x7f\xc3\xa9\xed\xff'
"""Bytes that make a document almost JSON: digits, escapes, brackets, odd literals, bad UTF-8."""


@st.composite
def near_json(draw: st.DrawFn) -> bytes:
    """A valid event document with a few bytes replaced or inserted: the edges of the grammar."""
    value = bytearray(json.dumps(draw(event_documents)).encode())
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(value)))
        byte = draw(st.sampled_from(NEAR_JSON))
        if draw(st.booleans()) and at < len(value):
            value[at] = byte
        else:
            value.insert(at, byte)
    return bytes(value)


@settings(max_examples=600, deadline=None, derandomize=True)
@given(near_json())
def test_almost_json_decodes_alike_on_both_paths(value: bytes) -> None:
    same_both_ways(value)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(event_documents)
def test_any_event_document_decodes_alike_with_a_filter(document: Any) -> None:
    same_both_ways(json.dumps(document).encode(), FILTERED, FILTERED_CHECKED)


def test_the_demo_plan_decodes_alike_and_its_quotes_take_the_fast_path() -> None:
    plan = build_plan(DemoConfig(events=3_000, references=200, partitions=1))
    batch = [
        RawRecord(kind, key, value, f"demo/0/{i}", lookup="" if kind is Kind.EVENT else "security")
        for i, (kind, key, value) in enumerate(plan.partitions[0])
    ]
    assert typed(decode_batch(FAST, "security", batch, 100)) == typed(
        decode_batch(CHECKED, "security", batch, 100)
    )
    fast = fast_events("security_id", "event_id", "ts", FAST.event_fields, 64_000)
    assert fast is not None
    quotes = [raw for raw in batch if raw.kind is Kind.EVENT and raw.value.startswith(b'{"')]
    taken = [fast(raw.value, raw.origin, 0) is not None for raw in quotes]
    assert taken.count(True) >= len(quotes) - plan.truth.malformed


def test_overlapping_field_names_leave_everything_to_the_checked_path() -> None:
    assert fast_events("id", "id", "ts", {}, 100) is None
    assert fast_events("security_id", "event_id", "ts", {"ts": "float"}, 100) is None
    odd = dataclasses.replace(FAST, event_id_field="security_id")
    raw = event(b'{"security_id":"S"}')
    assert typed(odd.decode(raw)) == typed(dataclasses.replace(odd, fast_path=False).decode(raw))
