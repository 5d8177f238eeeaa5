"""Waiting events as compact bytes: exact round trips, old snapshots, the memory budget."""

from __future__ import annotations

import math
import pickle
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from parked import ParkedShard
from test_recovery_store import ENRICH, SNAPS_0, SNAPS_1, insert, new_store

from dataflows.flow import enrich_config
from dataflows.settings import load_settings
from operators import waiting
from operators.enrichment import HELD, EnrichConfig, Pending, ShardEnricher, decoded, restore
from operators.parking import ParkingJoin
from operators.records import Event, MissReason, Outcome, RefUpdate, Status
from recovery_store.report import build_key_report, build_report
from recovery_store.store import Store, read_store
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
    st.integers(0, 2**63 - 1),
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


def test_an_encoding_of_the_version_without_arrival_numbers_decodes_as_number_0() -> None:
    """Its copies arrived before any numbered one, and 0 is below every number."""
    old = event("e1", "A")
    body = (old.event_id, old.lookup_id, old.event_time, old.fields, old.origin, ())
    blob = struct.pack("<dd", 1.0, 11.0) + pickle.dumps(body, 5)[2:]
    assert decoded(blob) == Pending(old._replace(seq=0), 1.0, 11.0)


def test_a_snapshot_of_the_earlier_version_holding_pending_objects_resumes() -> None:
    config = EnrichConfig(timeout_seconds=10.0, wait_for_reference=False)
    old = [Pending(event("e2", "B"), 2.0, 12.0), Pending(event("e1", "A"), 1.0, 11.0)]
    shard = ShardEnricher(config, old)
    assert shard.pending_count == 2 and shard.next_deadline() == 11.0
    assert sorted(restore(shard.snapshot())) == sorted(old)
    released = shard.process([RefUpdate("A", ("Alpha",), 1, "r")], now=3.0)
    assert [(r.event, r.status) for r in released] == [(old[1].event, Status.LATE_ENRICHED)]


def test_waiting_events_kept_in_the_join_by_the_earlier_version_are_parked_on_resume() -> None:
    """A store written before parking holds waiting events in the join's shard keys: the
    join parks them in the segments of the second they started waiting, deadline kept."""
    config = EnrichConfig(timeout_seconds=10.0, wait_for_reference=False)
    earlier = ShardEnricher(config)
    earlier.process([event("e1", "A"), event("e2", "B")], now=1.5)
    earlier.process([event("e3", "A")], now=2.5)
    shard = ParkedShard(config, (pickle.loads(pickle.dumps(earlier.snapshot())), {}))
    assert shard.join.next_deadline() == 0.0, "parks at once, by a notification"
    assert shard.expire(now=3.0) == [] and sorted(shard.segments) == ["s/1", "s/2"]
    assert shard.join.next_deadline() == 12.0 and shard.join.pending_count == 3
    released = shard.process([RefUpdate("A", ("Alpha",), 1, "r")], now=4.0)
    assert [(r.event.event_id, r.status) for r in released] == [
        ("e1", Status.LATE_ENRICHED),
        ("e3", Status.LATE_ENRICHED),
    ]
    out = shard.expire(now=11.6)
    assert [(r.event.event_id, r.miss_reason) for r in out] == [("e2", MissReason.TIMEOUT)]
    assert shard.segments == {}
    # The join forgets a segment when the last deadline it can hold has passed.
    assert shard.join.pending_count == 1 and shard.expire(now=12.0) == []
    assert shard.join.pending_count == 0


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


def _store(directory: Path, encode_states: bool) -> Store:
    """The recovery-store tests' two-partition store, its waiting events encoded or not."""
    snaps = [
        (step, key, epoch, pickle.dumps(waiting_compact(pickle.loads(blob))))
        if encode_states and step == ENRICH
        else (step, key, epoch, blob)
        for step, key, epoch, blob in SNAPS_1
    ]
    new_store(directory, 2)
    insert(directory, 1, "exs", (0, 2, 1))
    insert(directory, 0, "exs", (1, 2, 4))
    insert(directory, 0, "fronts", (0, 0, 5), (1, 0, 9))
    insert(directory, 1, "fronts", (0, 1, 4), (1, 1, 7))
    insert(directory, 0, "snaps", *SNAPS_0)
    insert(directory, 1, "snaps", *snaps)
    return read_store(directory)


def waiting_compact(state: list[Pending]) -> list[bytes]:
    return [waiting.encode(*item) for item in state]


def test_the_recovery_report_reads_encoded_snapshots_as_it_read_pending_ones(
    tmp_path: Path,
) -> None:
    old = _store(tmp_path / "old", encode_states=False)
    new = _store(tmp_path / "new", encode_states=True)
    encoded = [loads(snap.data) for snap in new.snapshots if snap.step_id == ENRICH and snap.data]
    assert any(state and type(state[0]) is bytes for state in encoded)  # type: ignore[index]
    assert build_report(new).enrichment == build_report(old).enrichment
    assert build_report(new).enrichment.events_pending == 4
    assert build_key_report(new, "A") == build_key_report(old, "A")


def test_the_memory_budget_is_split_over_lookups_and_shards() -> None:
    settings = load_settings(max_pending_mb=64, shards=8)
    assert len(settings.lookups) == 2
    for lookup in settings.lookups:
        assert enrich_config(settings, lookup).max_pending_bytes_per_shard == 4_000_000


def test_an_encoding_read_from_a_handed_store_may_name_no_global() -> None:
    crafted = struct.pack("<dd", 0.0, 1.0) + pickle.dumps((print, "x"))
    with pytest.raises(pickle.UnpicklingError, match="never names a global"):
        waiting.decode(crafted, waiting.loads_untrusted)


def test_a_join_records_its_shard_count_and_resumes_a_snapshot_that_did_not() -> None:
    """The count lets a resume with another ENRICH_SHARDS be refused (`recovery_guard`); a
    join snapshot of the version before has three parts and resumes as it was."""
    config = EnrichConfig(timeout_seconds=10.0, shards=64)
    join = ParkingJoin(config)
    join.process([event("e1", "A")], now=1.5)
    held, book, segments, shards, extra = pickle.loads(pickle.dumps(join.snapshot()))
    assert shards == 64 and book == {"A": {1: 1}}
    assert extra == {"clock": "processing"}, "the clock, so a resume on the other is refused"
    earlier = ParkingJoin(config, (held, book, segments))
    assert earlier.book == book and earlier.pending_count == 1
    assert earlier.snapshot()[3] == 64
