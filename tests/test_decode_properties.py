"""Whatever bytes arrive, nothing after decode raises, and every record ends somewhere.

Arbitrary JSON documents (NaN, infinities and overflowing literals such as
1e999 included), arbitrary bytes, and values at and beyond every limit go
through the real decoder, the join and the real SQLite sink. Each record must
end as exactly one of: a row, a row in the database's dead-letter table, or
a dead letter of decode or of the join; every row must hold strictly valid
JSON and read back the values it was given, and so must every message for
the enriched topic and every dead-letter line.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operators.chain import Stage, finish
from operators.decode import Decoder, ReferenceSchema, decode_batch
from operators.enrichment import EnrichConfig, MissPolicy, ShardEnricher
from operators.records import DeadLetter, Event, Joined, Kind, RawRecord, RefUpdate
from operators.sink_rows import SinkRow
from sinks.dead_letter import to_line
from sinks.kafka_topics import enriched_messages
from sinks.sqlite import SqliteDialect
from sinks.table import DeadLetterTable, EnrichedTable
from sinks.upsert import UpsertSink

COLUMNS = {"cusip": "str", "lots": "int", "rate": "float"}
DECODER = Decoder(
    lookup_field="security_id",
    event_id_field="event_id",
    event_time_field="ts",
    event_fields={"price": "float", "size": "int", "venue": "str", "urgent": "bool"},
    references={"security": ReferenceSchema(COLUMNS, "version")},
    max_record_bytes=64_000,
)
TABLE = EnrichedTable(
    name="enriched_events",
    event_columns=tuple(DECODER.event_fields.items()),
    reference_columns=tuple(COLUMNS.items()),
    unstored_fields=frozenset({"security_id", "event_id", "ts"}),
    keep_fields=True,
)
LETTERS = DeadLetterTable()
STAGE = Stage("security", tuple(COLUMNS))
TOPIC_MESSAGE = enriched_messages(TABLE)


def strict_json(text: str) -> Any:
    """RFC 8259 JSON only: NaN, Infinity and -Infinity are refused."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


class Outcome:
    """Where each record of one run ended, by origin."""

    def __init__(self) -> None:
        self.decode_letters: dict[str, DeadLetter] = {}
        self.join_letters: dict[str, DeadLetter] = {}
        self.updates: set[str] = set()
        self.written: list[Joined] = []
        self.sink_rows: list[SinkRow] = []
        self.rows: dict[str, dict[str, Any]] = {}
        self.refused: set[str] = set()


def run(records: list[RawRecord], work: Path, policy: MissPolicy = "defaults") -> Outcome:
    """Decode, join and write `records` as the dataflow does, in one batch."""
    outcome = Outcome()
    decoded = decode_batch(DECODER, "security", records)
    for letter in decoded.bad:
        assert letter.origin not in outcome.decode_letters
        outcome.decode_letters[letter.origin] = letter
    good = decoded.good.get("security", [])
    outcome.updates = {item.origin for item in good if type(item) is RefUpdate}
    enricher = ShardEnricher(
        EnrichConfig(timeout_seconds=1.0, miss_policy=policy, defaults=("UNKNOWN", 0, 0.0))
    )
    joined = [*enricher.process(good, now=1_000.0), *enricher.flush(now=1_001.0)]
    for out in joined:
        if type(out) is DeadLetter:
            outcome.join_letters[out.origin] = out
        else:
            outcome.written.append(finish(out, STAGE, (), "security_id"))  # type: ignore[arg-type]
            outcome.sink_rows.append(finish(out, STAGE, (), "security_id", TABLE.rows))  # type: ignore[arg-type]
    for letter in [*outcome.decode_letters.values(), *outcome.join_letters.values()]:
        strict_json(to_line(letter))
    for row in outcome.sink_rows:
        strict_json(TOPIC_MESSAGE(row).value)
    dialect = SqliteDialect(work / "enriched.sqlite")
    partition = UpsertSink(dialect, TABLE, 1, 5).build_part("out", "0", None)
    try:
        partition.write_batch([outcome.sink_rows])
    finally:
        partition.close()
    with closing(sqlite3.connect(dialect.path)) as conn:
        conn.row_factory = sqlite3.Row
        outcome.rows = {
            row["event_id"]: dict(row) for row in conn.execute(f"SELECT * FROM {TABLE.name}")
        }
        outcome.refused = {
            row["origin"] for row in conn.execute(f"SELECT origin FROM {LETTERS.name}")
        }
    return outcome


def check(records: list[RawRecord], outcome: Outcome) -> None:
    """Every record is accounted for exactly once, and every row is what it was given."""
    for raw in records:
        places = [
            raw.origin in outcome.decode_letters,
            raw.origin in outcome.join_letters,
            raw.origin in outcome.updates,
            any(rec.event.origin == raw.origin for rec in outcome.written),
        ]
        assert places.count(True) == 1, (raw, places)
    last: dict[str, Joined] = {}
    for rec in outcome.written:
        kept = last.get(rec.event.event_id)
        # The sink keeps the copy that arrived last, whatever order they are written in.
        if rec.event.origin not in outcome.refused and (
            kept is None or rec.event.seq >= kept.event.seq
        ):
            last[rec.event.event_id] = rec
    assert set(outcome.rows) == set(last)
    for event_id, rec in last.items():
        row = outcome.rows[event_id]
        assert row["ref_version"] == rec.version
        assert row["event_time"] == rec.event.event_time
        assert row["lookup_id"] == rec.event.lookup_id
        for name in DECODER.event_fields:
            assert row[name] == rec.event.fields.get(name)
        assert strict_json(row["stages"])[0]["version"] == rec.version
        extra = {
            key: value
            for key, value in rec.event.fields.items()
            if key not in {"security_id", "event_id", "ts", *DECODER.event_fields}
        }
        assert (None if row["attributes"] is None else strict_json(row["attributes"])) == (
            extra or None
        )


EDGE_INTS = [0, 1, -1, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**30, -(10**40)]
TIMES = [
    "2024-01-01T00:00:00",
    "2024-01-01 09:00:00+09:00",
    "0001-01-01T00:00:00",
    "0001-01-02T00:00:00Z",
    "0001-01-01T12:00:00+13:00",
    "9999-12-30T23:59:59",
    "9999-12-31T00:00:00Z",
    "9999-12-31T23:59:59-05:00",
    "1970-01-01",
    "inf",
    "-inf",
    "nan",
    "1e999",
    "1700000000",
]
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(EDGE_INTS),
    st.floats(),
    st.sampled_from([math.inf, -math.inf, math.nan, 1.7e308, 5e-324, -0.0, 1e19, -7e10]),
    st.text(max_size=8),
    st.sampled_from(TIMES),
    st.just("x" * 1001),
)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def sometimes(
    poison: st.SearchStrategy[Any], valid: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """Valid values nine times in ten, so that many records get as far as the sink."""
    return st.sampled_from([valid] * 9 + [poison]).flatmap(lambda chosen: chosen)


POISON_IDS = [2**63, -(2**63) - 1, 2**63 - 1, "", "x" * 1000, "x" * 1001]
ids = sometimes(
    st.one_of(st.sampled_from(POISON_IDS), json_values), st.sampled_from(["S1", "S2", "3", 3])
)
event_ids = sometimes(
    st.one_of(st.sampled_from(POISON_IDS), json_values), st.sampled_from(["e1", "e2", 7])
)
valid_times = st.one_of(
    st.floats(-1e10, 1e10),
    st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat()),
)
times = sometimes(st.one_of(st.sampled_from(TIMES), st.floats(), json_values), valid_times)
integers = sometimes(
    st.one_of(st.sampled_from(EDGE_INTS), st.integers(), json_values),
    st.integers(-(2**63), 2**63 - 1),
)
floats = sometimes(
    st.one_of(st.floats(), st.sampled_from(EDGE_INTS), json_values),
    st.floats(allow_nan=False, allow_infinity=False),
)
texts = sometimes(st.one_of(st.sampled_from(["x" * 1000, "x" * 1001]), json_values), st.text())
versions = sometimes(
    st.one_of(st.sampled_from(EDGE_INTS), st.sampled_from(TIMES), st.floats(), json_values),
    st.one_of(st.integers(-(2**63), 2**63 - 1), valid_times),
)
event_documents = st.fixed_dictionaries(
    {"security_id": ids},
    optional={
        "event_id": event_ids,
        "ts": times,
        "price": floats,
        "size": integers,
        "venue": texts,
        "urgent": sometimes(json_values, st.booleans()),
        "extra": json_values,
    },
)
reference_documents = st.fixed_dictionaries(
    {},
    optional={
        "cusip": texts,
        "lots": integers,
        "rate": floats,
        "version": versions,
        "other": json_values,
    },
)
OVERFLOWS = [None, "1e999", "1" * 320 + ".5", "1E+0400", "0.1e310"]
"""What `Infinity` becomes in the text: NaN and infinities as JSON numbers that overflow."""


@st.composite
def document_bytes(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> bytes:
    """A document as JSON text, its infinities maybe as overflowing numbers; or JSON that is
    no object, or bytes that are no JSON."""
    text = json.dumps(draw(sometimes(json_values, documents)))
    overflow = draw(st.sampled_from(OVERFLOWS))
    if overflow is not None:
        text = re.sub(r"\bInfinity\b", overflow, text)
    return draw(sometimes(st.binary(max_size=40), st.just(text.encode())))


events = st.builds(
    lambda value: RawRecord(Kind.EVENT, None, value, ""),
    sometimes(st.none(), document_bytes(event_documents)),
)
references = st.builds(
    lambda key, value: RawRecord(Kind.REFERENCE, key, value, "", lookup="security"),
    sometimes(st.binary(max_size=6) | st.none(), st.sampled_from([b"S1", b"S2", b"3"])),
    sometimes(st.none(), document_bytes(reference_documents)),
)
batches = st.lists(st.one_of(events, references), max_size=12).map(
    lambda records: [raw._replace(origin=f"{raw.kind}/0/{i}") for i, raw in enumerate(records)]
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(batches, st.sampled_from(["defaults", "dead_letter", "pass_through"]))
def test_no_record_makes_anything_after_decode_raise_and_every_record_ends_somewhere(
    records: list[RawRecord], policy: MissPolicy
) -> None:
    with tempfile.TemporaryDirectory() as work:
        check(records, run(records, Path(work), policy))


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.one_of(events, references))
def test_decode_turns_any_bytes_into_a_record_or_a_dead_letter(raw: RawRecord) -> None:
    for kind in Kind:
        result = DECODER.decode(raw._replace(kind=kind, lookup="security"))
        assert type(result) in (Event, RefUpdate, DeadLetter)
        if type(result) is DeadLetter:
            strict_json(to_line(result))


def event(origin: str, value: bytes) -> RawRecord:
    return RawRecord(Kind.EVENT, None, value, origin)


def reference(origin: str, key: bytes, value: bytes) -> RawRecord:
    return RawRecord(Kind.REFERENCE, key, value, origin, lookup="security")


@pytest.mark.parametrize(
    ("poison", "reason"),
    [
        (
            reference("r/big", b"S1", b'{"cusip":"X","version":9223372036854775808}'),
            "invalid_field",
        ),
        (reference("r/year1", b"S1", b'{"cusip":"X","version":"0001-01-01"}'), "invalid_field"),
        (reference("r/inf", b"S1", b'{"cusip":"X","version":Infinity}'), "invalid_json"),
        (event("e/size", b'{"security_id":"S1","event_id":"p","size":9223372036854775808}'), None),
        (event("e/year1", b'{"security_id":"S1","event_id":"p","ts":"0001-01-01T00:00:00"}'), None),
        (event("e/nan", b'{"security_id":"S1","event_id":"p","extra":NaN}'), "invalid_json"),
        (event("e/over", b'{"security_id":"S1","event_id":"p","extra":[1e999]}'), None),
    ],
)
def test_a_poison_record_is_a_dead_letter_and_its_batch_is_written(
    tmp_path: Path, poison: RawRecord, reason: str | None
) -> None:
    """Each of these used to raise in decode or in the sink, on every resume."""
    records = [
        reference("r/good", b"S1", b'{"cusip":"C1","lots":9223372036854775807,"version":1}'),
        event("e/good", b'{"security_id":"S1","event_id":"g","extra":{"n":1.5}}'),
        poison,
        event("e/after", b'{"security_id":"S1","event_id":"a"}'),
    ]
    outcome = run(records, tmp_path)
    check(records, outcome)
    assert outcome.decode_letters[poison.origin].reason == (reason or "invalid_field")
    assert sorted(outcome.rows) == ["a", "g"]
    assert outcome.rows["g"]["lots"] == 2**63 - 1
    assert outcome.rows["g"]["attributes"] == '{"extra":{"n":1.5}}'


def test_opposite_infinite_event_times_in_one_batch_are_dead_letters(tmp_path: Path) -> None:
    """They used to raise "-inf + inf in fsum" in the latency histogram after the commit."""
    records = [
        event("e/plus", b'{"security_id":"S1","ts":1e999}'),
        event("e/minus", b'{"security_id":"S1","ts":-1e999}'),
        event("e/nan", b'{"security_id":"S1","ts":"nan"}'),
        event("e/good", b'{"security_id":"S1","ts":1700000000.5}'),
    ]
    outcome = run(records, tmp_path, "pass_through")
    check(records, outcome)
    assert sorted(outcome.decode_letters) == ["e/minus", "e/nan", "e/plus"]
    assert outcome.rows["e/good"]["event_time"] == 1_700_000_000.5
