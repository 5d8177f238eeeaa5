"""Every way a producer can get a record wrong ends as a dead letter with a reason."""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import pytest

from operators.decode import Decoder, ReferenceSchema, decode_batch
from operators.enrichment import EnrichConfig, ShardEnricher
from operators.filters import Condition, all_of
from operators.records import CaughtUp, DeadLetter, Event, FieldType, Kind, RawRecord, RefUpdate

DECODER = Decoder(
    lookup_field="security_id",
    event_id_field="event_id",
    event_time_field="ts",
    event_fields={"price": "float", "size": "int"},
    references={"security": ReferenceSchema({"cusip": "str", "name": "str"}, "version")},
    max_record_bytes=1_000,
)


def event(value: bytes | None) -> RawRecord:
    return RawRecord(Kind.EVENT, None, value, "events/0/7")


def reference(key: bytes | None, value: bytes | None, lookup: str = "security") -> RawRecord:
    return RawRecord(Kind.REFERENCE, key, value, "refs/1/3", lookup=lookup)


def dumps(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_valid_event_keeps_every_field_and_coerces_declared_ones() -> None:
    raw = event(dumps({"event_id": 9, "security_id": "S1", "price": "1.5", "ts": 10, "x": [1]}))
    result = DECODER.decode(raw)
    assert result == Event(
        "9",
        "S1",
        10.0,
        {"event_id": 9, "security_id": "S1", "price": 1.5, "ts": 10, "x": [1]},
        "events/0/7",
    )


def test_event_without_id_gets_one_from_its_origin() -> None:
    result = DECODER.decode(event(dumps({"security_id": 42})))
    assert isinstance(result, Event)
    assert result.event_id == "events/0/7"
    assert result.lookup_id == "42"


def test_event_time_accepts_iso_timestamps() -> None:
    result = DECODER.decode(event(dumps({"security_id": "S", "ts": "1970-01-01T00:01:00Z"})))
    assert isinstance(result, Event)
    assert result.event_time == 60.0


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (b"{not json", "invalid_json", "line 1"),
        (b"\xff\xfe{}", "invalid_utf8", "utf-8"),
        (b"[1, 2]", "not_an_object", "list"),
        (b"", "empty_value", "is empty"),
        (None, "tombstone", "only reference rows delete"),
        (dumps({"price": 1.0}), "missing_lookup_id", "security_id"),
        (dumps({"security_id": None}), "missing_lookup_id", "security_id"),
        (dumps({"security_id": ""}), "invalid_field", "security_id"),
        (dumps({"security_id": {"a": 1}}), "invalid_field", "security_id"),
        (dumps({"security_id": "S", "price": "abc"}), "invalid_field", "price"),
        (dumps({"security_id": "S", "size": 1.5}), "invalid_field", "size"),
        (dumps({"security_id": "S", "ts": "yesterday"}), "invalid_field", "ts"),
        (dumps({"security_id": "S", "pad": "x" * 2_000}), "oversized", "limit of 1000"),
    ],
)
def test_bad_events_become_dead_letters_with_payload_and_origin(
    value: bytes | None, reason: str, detail: str
) -> None:
    result = DECODER.decode(event(value))
    assert isinstance(result, DeadLetter)
    assert result.reason == reason
    assert detail in result.detail
    assert result.payload == value
    assert result.origin == "events/0/7"


def test_reference_row_is_projected_to_the_configured_columns_in_order() -> None:
    raw = reference(b"S1", dumps({"name": "Acme", "cusip": "123", "wide": "x" * 50, "version": 3}))
    assert DECODER.decode(raw) == RefUpdate("S1", ("123", "Acme"), 3.0, "refs/1/3")


def test_reference_missing_columns_are_null_and_timestamps_are_versions() -> None:
    result = DECODER.decode(reference(b"S1", dumps({"version": "1970-01-02T00:00:00Z"})))
    assert result == RefUpdate("S1", (None, None), 86_400.0, "refs/1/3")


def test_reference_tombstone() -> None:
    assert DECODER.decode(reference(b"S1", None)) == RefUpdate("S1", None, None, "refs/1/3")


def test_replay_flag_is_carried() -> None:
    raw = reference(b"S1", None)._replace(replay=True)
    result = DECODER.decode(raw)
    assert isinstance(result, RefUpdate)
    assert result.replay


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, dumps({"name": "x"}), "missing_lookup_id"),
        (b"", dumps({"name": "x"}), "missing_lookup_id"),
        (b"\xff", dumps({"name": "x"}), "invalid_utf8"),
        (b"S1", b"{", "invalid_json"),
        (b"S1", dumps({"version": "new"}), "invalid_field"),
        (b"S1", dumps({"name": 5}), "invalid_field"),
    ],
)
def test_bad_reference_records_become_dead_letters(
    key: bytes | None, value: bytes, reason: str
) -> None:
    result = DECODER.decode(reference(key, value))
    assert isinstance(result, DeadLetter)
    assert result.reason == reason
    assert result.key == key
    assert result.payload == value


def test_integer_versions_stay_exact_beyond_float_precision() -> None:
    scn = 2**60 + 1
    result = DECODER.decode(reference(b"S1", dumps({"version": scn})))
    assert isinstance(result, RefUpdate)
    assert result.version == scn
    assert type(result.version) is int


def test_batch_keeps_order_and_counts_replayed_invalid_records_instead_of_dead_lettering() -> None:
    batch = [
        reference(b"S1", dumps({"name": "A"})),
        event(b"{bad"),
        reference(b"S2", b"{bad")._replace(replay=True),
        event(dumps({"security_id": "S1"})),
        reference(b"S3", b"{bad"),
        CaughtUp("refs/1", 2, "security"),
    ]
    decoded = decode_batch(DECODER, "security", batch)
    assert [type(r) for r in decoded.good["security"]] == [RefUpdate, Event]
    assert [(d.reason, d.key) for d in decoded.bad] == [
        ("invalid_json", None),
        ("invalid_json", b"S3"),
    ]
    assert decoded.caught_up == [CaughtUp("refs/1", 2, "security")]
    assert decoded.events == 2
    assert decoded.replayed_invalid == 1


CHAIN = Decoder(
    lookup_field="security_id",
    event_id_field="event_id",
    event_time_field="ts",
    event_fields={"price": "float", "size": "int"},
    references={
        "security": ReferenceSchema(
            {"name": "str", "exchange_id": "str"},
            keep=all_of([Condition(field="status", op="==", value="ACTIVE")]),
        ),
        "exchange": ReferenceSchema({"country": "str"}, "seq"),
    },
    max_record_bytes=1_000,
    keep_event=all_of([Condition(field="price", op=">", value=100)]),
)


def test_each_lookup_decodes_its_own_columns_and_version() -> None:
    security = CHAIN.decode(
        reference(b"S1", dumps({"name": "A", "exchange_id": "XLON", "status": "ACTIVE", "x": 1}))
    )
    exchange = CHAIN.decode(reference(b"XLON", dumps({"country": "GB", "seq": 7}), "exchange"))
    assert security == RefUpdate("S1", ("A", "XLON"), None, "refs/1/3")
    assert exchange == RefUpdate("XLON", ("GB",), 7, "refs/1/3")


def test_a_reference_row_the_filter_leaves_out_decodes_as_a_delete() -> None:
    result = CHAIN.decode(reference(b"S1", dumps({"name": "A", "status": "RETIRED"})))
    assert result == RefUpdate("S1", None, None, "refs/1/3", filtered=True)


def test_a_record_of_an_unknown_lookup_is_a_dead_letter() -> None:
    result = CHAIN.decode(reference(b"S1", dumps({"name": "A"}), "sector"))
    assert isinstance(result, DeadLetter)
    assert result.reason == "unknown_lookup"


def test_the_event_filter_runs_on_coerced_fields_and_drops_before_any_state() -> None:
    batch = [
        event(dumps({"security_id": "S1", "price": "150.5"})),
        event(dumps({"security_id": "S2", "price": 99})),
        event(dumps({"security_id": "S3", "price": None})),
        reference(b"XLON", dumps({"country": "GB"}), "exchange"),
        reference(b"S9", dumps({"name": "Z", "status": "HALTED"})),
    ]
    decoded = decode_batch(CHAIN, "security", batch)
    assert [e.lookup_id for e in decoded.good["security"]] == ["S1", "S9"]
    assert [u.lookup_id for u in decoded.good["exchange"]] == ["XLON"]
    assert decoded.events == 3
    assert decoded.filtered_events == 2
    assert decoded.filtered_references == 1
    assert decoded.bad == []


WIDE = dataclasses.replace(
    DECODER,
    event_fields={"price": "float", "size": "int", "venue": "str"},
    references={
        "security": ReferenceSchema({"cusip": "str", "lots": "int", "rate": "float"}, "version")
    },
    max_record_bytes=100_000,
)
"""Like DECODER, with a declared field and column of every type and room for long text."""

LONG = "x" * 1001


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (b'{"security_id":"S","size":9223372036854775808}', "size"),
        (b'{"security_id":"S","size":-9223372036854775809}', "size"),
        (b'{"security_id":"S","size":1e19}', "size"),
        (b'{"security_id":9223372036854775808}', "security_id"),
        (b'{"security_id":"S","event_id":-9223372036854775809}', "event_id"),
        (b'{"security_id":"S","ts":"0001-01-01T00:00:00"}', "ts"),
        (b'{"security_id":"S","ts":"0001-01-01T12:00:00+13:00"}', "ts"),
        (b'{"security_id":"S","ts":"9999-12-31T23:59:59-05:00"}', "ts"),
        (b'{"security_id":"S","ts":1e999}', "ts"),
        (b'{"security_id":"S","ts":-1e999}', "ts"),
        (b'{"security_id":"S","ts":"inf"}', "ts"),
        (b'{"security_id":"S","ts":"nan"}', "ts"),
        (b'{"security_id":"S","ts":1e300}', "ts"),
        (b'{"security_id":"S","ts":-7e10}', "ts"),
        (b'{"security_id":"S","ts":99999999999999999999999}', "ts"),
        (b'{"security_id":"S","price":1e999}', "price"),
        (b'{"security_id":"S","price":"-inf"}', "price"),
        (b'{"security_id":"S","extra":1e999}', "extra"),
        (b'{"security_id":"S","extra":{"deep":[1,-1e999]}}', "extra.deep.1"),
        (b'{"security_id":"S","extra":' + b"1" * 400 + b".5}", "extra"),
        (b'{"security_id":"S","venue":"' + LONG.encode() + b'"}', "venue"),
        (b'{"security_id":"' + LONG.encode() + b'"}', "security_id"),
        (b'{"security_id":"S","event_id":"' + LONG.encode() + b'"}', "event_id"),
    ],
)
def test_values_no_database_can_hold_are_dead_letters_naming_the_field(
    value: bytes, field: str
) -> None:
    result = WIDE.decode(event(value))
    assert isinstance(result, DeadLetter)
    assert result.reason == "invalid_field"
    assert result.detail.startswith(f"{field}:") or result.detail.startswith(
        f"{field}.constrained-"
    )
    assert result.payload == value


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_literals_are_invalid_json(literal: bytes) -> None:
    value = b'{"security_id":"S","extra":' + literal + b"}"
    result = WIDE.decode(event(value))
    assert isinstance(result, DeadLetter)
    assert result.reason == "invalid_json"


def test_the_edges_of_every_range_are_kept() -> None:
    doc = {
        "security_id": 2**63 - 1,
        "event_id": -(2**63),
        "size": -(2**63),
        "price": 1.7e308,
        "venue": "ü" * 1000,
        "ts": "0001-01-02T00:00:00Z",
        "big": 2**200,
        "tiny": 5e-324,
    }
    first = WIDE.decode(event(dumps(doc)))
    last = WIDE.decode(event(dumps({**doc, "ts": "9999-12-30T23:59:59.999999+00:00"})))
    assert isinstance(first, Event)
    assert isinstance(last, Event)
    assert (first.lookup_id, first.event_id) == (str(2**63 - 1), str(-(2**63)))
    assert first.fields["size"] == -(2**63)
    assert first.fields["big"] == 2**200
    assert first.event_time == -62135510400.0
    assert last.event_time == 253402214399.999999


@pytest.mark.parametrize(
    ("value", "reason", "field"),
    [
        (b'{"version":9223372036854775808}', "invalid_field", "version"),
        (b'{"version":-9223372036854775809}', "invalid_field", "version"),
        (b'{"version":1e19}', "invalid_field", "version"),
        (b'{"version":"0001-01-01"}', "invalid_field", "version"),
        (b'{"version":"9999-12-31T00:00:01"}', "invalid_field", "version"),
        (b'{"version":1e999}', "invalid_field", "version"),
        (b'{"version":-1e999}', "invalid_field", "version"),
        (b'{"version":"nan"}', "invalid_field", "version"),
        (b'{"version":1e-200}', "invalid_field", "version"),
        (b'{"version":Infinity}', "invalid_json", "expected value"),
        (b'{"version":NaN}', "invalid_json", "expected value"),
        (b'{"lots":9223372036854775808}', "invalid_field", "lots"),
        (b'{"rate":1e999}', "invalid_field", "rate"),
        (b'{"cusip":"' + LONG.encode() + b'"}', "invalid_field", "cusip"),
    ],
)
def test_reference_values_no_database_can_hold_are_dead_letters(
    value: bytes, reason: str, field: str
) -> None:
    result = WIDE.decode(reference(b"S1", value))
    assert isinstance(result, DeadLetter)
    assert result.reason == reason
    assert result.detail.startswith(field)
    assert result.key == b"S1"


def test_versions_at_the_edges_of_what_both_databases_hold_stay_exact() -> None:
    for version in (2**63 - 1, -(2**63), 1e-130, -1e-130, 0.0, -(2.0**63)):
        result = WIDE.decode(reference(b"S1", dumps({"version": version})))
        assert isinstance(result, RefUpdate)
        assert (result.version, type(result.version)) == (version, type(version))


def test_a_non_finite_version_cannot_freeze_a_row() -> None:
    """Infinity used to be applied, and every later version counted as stale."""
    batch = [
        reference(b"S1", dumps({"cusip": "OLD", "version": 5})),
        reference(b"S1", b'{"cusip":"FROZEN","version":1e999}'),
        reference(b"S1", b'{"cusip":"FROZEN","version":Infinity}'),
        reference(b"S1", dumps({"cusip": "NEW", "version": 1_700_000_000})),
        event(dumps({"security_id": "S1", "event_id": "e1"})),
    ]
    decoded = decode_batch(WIDE, "security", batch)
    assert [letter.reason for letter in decoded.bad] == ["invalid_field", "invalid_json"]
    enricher = ShardEnricher(EnrichConfig(timeout_seconds=1.0))
    [out] = enricher.process(decoded.good["security"], now=0.0)
    assert (out.row, out.version) == (("NEW", None, None, 1_700_000_000), 1_700_000_000)
    assert enricher.tally.stale == 0


class TestValidityTimes:
    """An as-of lookup reads each row's validity time; a row without one is a dead letter."""

    COLUMNS: ClassVar[dict[str, FieldType]] = {"cusip": "str"}

    def decode(
        self, schema: ReferenceSchema, value: object, timestamp: float | None = 7.0
    ) -> object:
        raw = RawRecord(
            Kind.REFERENCE,
            b"S1",
            None if value is None else dumps(value),
            "refs/1/3",
            lookup="security",
            timestamp=timestamp,
        )
        decoder = dataclasses.replace(DECODER, references={"security": schema})
        return decoder.decode(raw)

    def test_the_version_read_as_a_time(self) -> None:
        schema = ReferenceSchema(self.COLUMNS, "version", valid_from="version")
        update = self.decode(schema, {"cusip": "C", "version": "2024-01-01T00:00:00"})
        assert isinstance(update, RefUpdate)
        assert update.valid_from == 1_704_067_200.0 and update.at == 7.0
        letter = self.decode(schema, {"cusip": "C"})
        assert isinstance(letter, DeadLetter) and letter.reason == "missing_valid_from"

    def test_a_field_of_its_own(self) -> None:
        schema = ReferenceSchema(self.COLUMNS, "version", None, "field", "effective")
        update = self.decode(schema, {"cusip": "C", "version": 3, "effective": 1_000.5})
        assert isinstance(update, RefUpdate) and update.valid_from == 1_000.5
        assert update.row == ("C",), "the field is read, not kept as a column"
        for bad in (
            {"cusip": "C"},
            {"cusip": "C", "effective": "soon"},
            {"cusip": "C", "effective": 1e300},
        ):
            letter = self.decode(schema, bad)
            assert isinstance(letter, DeadLetter), bad
            assert letter.reason in ("missing_valid_from", "invalid_field"), letter

    def test_the_record_s_time(self) -> None:
        schema = ReferenceSchema(self.COLUMNS, "version", valid_from="record_time")
        update = self.decode(schema, {"cusip": "C"}, timestamp=42.0)
        assert isinstance(update, RefUpdate) and update.valid_from == 42.0
        letter = self.decode(schema, {"cusip": "C"}, timestamp=None)
        assert isinstance(letter, DeadLetter) and letter.reason == "missing_valid_from"

    def test_a_tombstone_takes_its_record_s_time_and_a_filtered_row_its_own(self) -> None:
        schema = ReferenceSchema(self.COLUMNS, "version", valid_from="version")
        tombstone = self.decode(schema, None, timestamp=9.0)
        assert isinstance(tombstone, RefUpdate)
        assert (tombstone.row, tombstone.valid_from, tombstone.at) == (None, 9.0, 9.0)
        keep = all_of([Condition(field="cusip", op="==", value="KEEP")])
        filtered = self.decode(
            ReferenceSchema(self.COLUMNS, "version", keep, "version"), {"cusip": "X", "version": 5}
        )
        assert isinstance(filtered, RefUpdate) and filtered.filtered
        assert (filtered.row, filtered.valid_from) == (None, 5.0)

    def test_the_latest_mode_reads_no_validity_time(self) -> None:
        update = self.decode(ReferenceSchema(self.COLUMNS, "version"), {"cusip": "C"})
        assert isinstance(update, RefUpdate) and update.valid_from is None and update.at == 7.0
