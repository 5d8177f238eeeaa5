"""Waiting events as compact bytes: exact round trips, old snapshots, the memory budget."""

from __future__ import annotations

import math
import pickle

from hypothesis import given
from hypothesis import strategies as st

from operators import waiting
from operators.enrichment import HELD, EnrichConfig, Pending, ShardEnricher, decoded, restore
from operators.records import Event, MissReason, Outcome, RefUpdate, Status
from recovery_store.unpickle import loads

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
outcomes = st.builds(
    Outcome,
    st.text(),
    st.sampled_from(Status),
    st.none() | st.sampled_from(MissReason),
    st.floats(0, 1e6),
    st.none() | st.integers() | st.floats(allow_nan=False, allow_infinity=False),
)
events = st.builds(
    Event,
    st.text(),
    st.text(),
    st.none() | st.floats(allow_nan=False, allow_infinity=False),
    st.dictionaries(st.text(), json_values, max_size=5),
    st.text(),
    st.lists(outcomes, max_size=3).map(tuple),
)


@given(events, st.floats(0, 2e9), st.floats(0, 2e9) | st.just(HELD))
def test_an_encoded_event_decodes_to_the_same_event(
    event: Event, arrived: float, deadline: float
) -> None:
    blob = waiting.encode(event, arrived, deadline)
    assert decoded(blob) == Pending(event, arrived, deadline)
    assert waiting.lookup_id(blob) == event.lookup_id
    assert waiting.arrived(blob) == arrived and waiting.deadline(blob) == deadline
    # A snapshot of blobs needs no global to unpickle.
    assert loads(pickle.dumps([blob])) == [blob]


def event(event_id: str, key: str) -> Event:
    return Event(event_id, key, None, {"id": event_id, "price": 1.5}, f"t/0/{event_id}")


def test_a_snapshot_of_the_earlier_version_holding_pending_objects_resumes() -> None:
    config = EnrichConfig(timeout_seconds=10.0, wait_for_reference=False)
    old = [Pending(event("e2", "B"), 2.0, 12.0), Pending(event("e1", "A"), 1.0, 11.0)]
    shard = ShardEnricher(config, old)
    assert shard.pending_count == 2 and shard.next_deadline() == 11.0
    assert sorted(restore(shard.snapshot())) == sorted(old)
    released = shard.process([RefUpdate("A", ("Alpha",), 1, "r")], now=3.0)
    assert [(r.event, r.status) for r in released] == [(old[1].event, Status.LATE_ENRICHED)]


def test_the_memory_budget_sends_the_oldest_out_as_counted_overflow() -> None:
    size = waiting.size(waiting.encode(event("e0", "A"), 0.0, 10.0))
    config = EnrichConfig(timeout_seconds=10.0, max_pending_bytes_per_shard=3 * size)
    shard = ShardEnricher(config)
    out = shard.process([event(f"e{i}", "AB"[i % 2]) for i in range(5)], now=0.0)
    assert [(r.event.event_id, r.miss_reason) for r in out] == [
        ("e0", MissReason.OVERFLOW),
        ("e1", MissReason.OVERFLOW),
    ]
    assert shard.tally.missed_out == {MissReason.OVERFLOW: 2}
    assert shard.pending_count == 3 and shard.pending_bytes == 3 * size
    assert sorted(p.event.event_id for p in shard.waiting()) == ["e2", "e3", "e4"]


def test_held_events_count_against_the_memory_budget_too() -> None:
    size = waiting.size(waiting.encode(event("e0", "A"), 0.0, math.inf))
    config = EnrichConfig(
        timeout_seconds=10.0, wait_for_reference=True, max_pending_bytes_per_shard=2 * size
    )
    shard = ShardEnricher(config)
    out = shard.process([event("e0", "A"), event("e1", "A"), event("e2", "A")], now=0.0)
    assert [(r.event.event_id, r.miss_reason) for r in out] == [("e0", MissReason.OVERFLOW)]
    assert shard.pending_bytes == 2 * size
