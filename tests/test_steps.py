"""The dataflow's batch functions, without Bytewax: routing, handing on, finishing, splitting."""

from __future__ import annotations

import json
from zlib import crc32

from operators import routing, steps
from operators.arrival import ArrivalNumbers
from operators.chain import Stage, finish
from operators.decode import DecodedBatch, Decoder, ReferenceSchema
from operators.records import (
    CaughtUp,
    DeadLetter,
    Event,
    Joined,
    Kind,
    PartitionTime,
    RawRecord,
    RefUpdate,
    Status,
)
from operators.sink_rows import ARRIVAL_SEQ, RowShape

SHARDS = routing.names(4)
DECODER = Decoder(
    lookup_field="security_id",
    event_id_field="event_id",
    event_time_field="ts",
    event_fields={"price": "float"},
    references={
        "security": ReferenceSchema({"exchange_id": "str"}, "version"),
        "exchange": ReferenceSchema({"country": "str"}, "version"),
    },
    max_record_bytes=1_000,
)
SECURITY = Stage("security", ("exchange_id",))
EXCHANGE = Stage("exchange", ("exchange_country",))
ROWS = RowShape(("price",), ("exchange_id", "exchange_country"), frozenset({"event_id"}))


def raw_event(event_id: str, security_id: str) -> RawRecord:
    body = {"event_id": event_id, "security_id": security_id, "price": 1.0}
    return RawRecord(Kind.EVENT, None, json.dumps(body).encode(), f"events/0/{event_id}")


def raw_reference(lookup: str, key: str, body: object) -> RawRecord:
    value = json.dumps(body).encode()
    return RawRecord(Kind.REFERENCE, key.encode(), value, f"{lookup}/0/1", lookup=lookup)


def shard_of(key: str) -> str:
    return SHARDS[crc32(key.encode()) % len(SHARDS)]


def enriched(event_id: str, security_id: str, row: tuple[object, ...] | None) -> Joined:
    fields = {"event_id": event_id, "security_id": security_id}
    event = Event(event_id, security_id, None, fields, f"events/0/{event_id}")
    status = Status.ENRICHED if row is not None else Status.LOOKUP_MISS
    return Joined(event, row, 1 if row else None, status, None, 0.0)


LETTER = DeadLetter("invalid_json", "x", b"{", None, "events/0/9")


def test_is_routed_tells_a_group_from_a_dead_letter() -> None:
    assert steps.is_routed(("01", []))
    assert not steps.is_routed(LETTER)


def test_for_lookup_keeps_only_the_groups_addressed_to_it() -> None:
    group = ("01", [1])
    assert steps.for_lookup("security", ("security", group)) == group
    assert steps.for_lookup("exchange", ("security", group)) is None


def test_decode_and_route_groups_each_lookup_by_shard_and_ends_with_dead_letters() -> None:
    seen: list[tuple[DecodedBatch, int]] = []
    route = steps.DecodeAndRoute(
        DECODER, ["security", "exchange"], SHARDS, lambda d, n: seen.append((d, n))
    )
    marker = CaughtUp("exchange/0", 3, "exchange")
    batch = [
        raw_event("e1", "S1"),
        RawRecord(Kind.EVENT, None, b"{", "events/0/2"),
        raw_reference("exchange", "X1", {"country": "UK", "version": 1}),
        marker,
    ]
    out = route(batch)
    routed = [item for item in out if steps.is_routed(item)]
    assert [item for item in out if not steps.is_routed(item)] == [out[-1]]
    assert isinstance(out[-1], DeadLetter)
    security = [group for name, group in routed if name == "security"]
    assert [(shard, [e.event_id for e in items]) for shard, items in security] == [
        (shard_of("S1"), ["e1"])
    ]
    exchange = dict(group for name, group in routed if name == "exchange")
    assert set(exchange) == set(SHARDS)  # the marker goes to every shard
    assert exchange[shard_of("X1")][0] == RefUpdate("X1", ("UK",), 1, "exchange/0/1")
    assert all(items[-1] == marker for items in exchange.values())
    assert len(seen) == 1 and seen[0][1] == 4 and seen[0][0].events == 2


def test_events_are_numbered_in_arrival_order_across_batches_and_a_still_clock() -> None:
    """Copies of an event id are told apart by arrival even when the clock stands still
    or steps back."""
    clock = iter([1_000, 1_000, 900])
    route = steps.DecodeAndRoute(
        DECODER, ["security", "exchange"], SHARDS, numbers=ArrivalNumbers(lambda: next(clock))
    )
    batches = [[raw_event("e1", "S1"), raw_event("e1", "S1")], [raw_event("e1", "S1")]] * 2
    numbers = [e.seq for batch in batches[:3] for _, (_, items) in route(batch) for e in items]
    assert numbers == [1_000, 1_001, 1_002, 1_003, 1_004]


def test_the_arrival_number_goes_through_the_chain_to_the_record() -> None:
    rec = enriched("e1", "S1", ("XLON",))
    rec = rec._replace(event=rec.event._replace(seq=42))
    [(_, [event])] = steps.HandOn(SECURITY, "exchange_id", SHARDS)([("00", [rec])])
    assert event.seq == 42
    joined = Joined(event, ("UK",), 1, Status.ENRICHED, None, 0.0)
    to_sink = steps.ToSink(EXCHANGE, ("exchange_id",), "security_id", ["0"], ROWS)
    [(_, [final])] = to_sink([("00", [joined])])
    assert final.binds[ARRIVAL_SEQ] == 42


def test_numbers_follow_the_clock_when_it_moved_on() -> None:
    """Wall-clock nanoseconds: a restarted process numbers above what the last one wrote."""
    numbers = ArrivalNumbers(iter([5, 50]).__next__)
    assert numbers.take(3) == 5 and numbers.take(1) == 50


def test_hand_on_rekeys_enriched_events_by_the_next_field_and_passes_dead_letters() -> None:
    hand_on = steps.HandOn(SECURITY, "exchange_id", SHARDS)
    out = hand_on([("00", [enriched("e1", "S1", ("XLON",)), LETTER])])
    assert out[-1] == LETTER
    [(shard, [event])] = [item for item in out if steps.is_routed(item)]
    assert shard == shard_of("XLON")
    assert event.lookup_id == "XLON" and event.fields["exchange_id"] == "XLON"
    assert [stage.lookup for stage in event.stages] == ["security"]


def test_to_sink_finishes_records_by_partition_and_keeps_dead_letters_apart() -> None:
    partitions = routing.names(2)
    to_sink = steps.ToSink(EXCHANGE, (), "security_id", partitions, ROWS)
    out = to_sink([("00", [enriched("e1", "S1", ("UK",)), LETTER])])
    assert out[-1] == LETTER
    groups = [item for item in out if steps.is_routed(item)]
    assert [row.event_id for _, rows in groups for row in rows] == ["e1"]
    assert groups[0][0] == partitions[crc32(b"e1") % 2]
    [[row]] = [rows for _, rows in groups]
    assert [stage["lookup"] for stage in json.loads(row.binds[-2])] == ["exchange"]
    assert row.origin == "events/0/e1" and row.fields is None


def test_to_sink_builds_the_row_finish_builds_then_binds() -> None:
    """One rule: the step's row is the finished record's row, for a chain of one or two."""
    rec = enriched("e1", "S1", ("XLON",))
    [(_, [event])] = steps.HandOn(SECURITY, "exchange_id", SHARDS)([("00", [rec])])
    joined = Joined(event, ("UK",), 1, Status.ENRICHED, None, 0.0)
    for last, earlier, record in ((SECURITY, (), rec), (EXCHANGE, ("exchange_id",), joined)):
        [(_, [row])] = steps.ToSink(last, earlier, "security_id", ["0"], ROWS)([("0", [record])])
        assert row == ROWS.of(finish(record, last, earlier, "security_id"))


def test_enriched_of_reads_only_records() -> None:
    record = ROWS.of(enriched("e1", "S1", ("UK",)))
    assert steps.enriched_of([("0", [record]), ("1", [])]) == [record]


def test_event_clock_lookups_hear_each_partition_s_largest_event_time_after_the_records() -> None:
    """Only lookups on the event clock; one mark per event partition of the batch, on every
    shard, after the records it covers; events without a time set nothing."""
    route = steps.DecodeAndRoute(
        DECODER,
        ["security", "exchange"],
        SHARDS,
        clocked=frozenset({"security"}),
        event_partitions=2,
    )

    def timed(event_id: str, partition: int, when: float | None) -> RawRecord:
        body = {"event_id": event_id, "security_id": "S1", "price": 1.0, "ts": when}
        return RawRecord(
            Kind.EVENT, None, json.dumps(body).encode(), f"events/{partition}/{event_id}"
        )

    batch = [timed("a", 0, 10.0), timed("b", 1, 30.0), timed("c", 0, 20.0), timed("d", 0, None)]
    out = route(batch)
    groups = dict(group for name, group in out if steps.is_routed(group) and name == "security")  # type: ignore[misc]
    assert set(groups) == set(SHARDS)
    marks = [PartitionTime("events/0", 20.0, 2), PartitionTime("events/1", 30.0, 2)]
    for shard, items in groups.items():
        assert items[-2:] == marks, shard
    assert [e.event_id for e in groups[shard_of("S1")][:-2]] == ["a", "b", "c", "d"]
    assert not [name for name, _ in out if name == "exchange"], (
        "the exchange lookup runs on processing time"
    )
