"""The join rules of one shard, driven directly with an explicit clock."""

from __future__ import annotations

import json

import pytest

from operators.enrichment import EnrichConfig, ShardEnricher, restore
from operators.records import CaughtUp, DeadLetter, Event, Joined, MissReason, RefUpdate, Status


def event(event_id: str, key: str = "A", **fields: object) -> Event:
    return Event(event_id, key, None, {"id": event_id, "key": key, **fields}, f"t/0/{event_id}")


def update(key: str = "A", name: str | None = "Alpha", version: float | None = 1) -> RefUpdate:
    return RefUpdate(key, None if name is None else (name,), version, f"r/{key}")


def enricher(**config: object) -> ShardEnricher:
    return ShardEnricher(EnrichConfig(**{"timeout_seconds": 10.0, **config}))  # type: ignore[arg-type]


def only(out: list) -> Joined:
    assert len(out) == 1
    return out[0]


def test_hit_is_enriched_at_once_with_the_held_version() -> None:
    shard = enricher()
    shard.process([update(version=3)], now=0.0)
    result = only(shard.process([event("e1")], now=1.0))
    assert result.status is Status.ENRICHED
    assert result.row[:-1] == ("Alpha",)
    assert result.version == 3
    assert result.waited_ms == 0.0
    assert shard.tally.hits == 1


def test_miss_waits_and_is_released_late_with_the_time_it_waited() -> None:
    shard = enricher()
    assert shard.process([event("e1"), event("e2")], now=100.0) == []
    assert shard.next_deadline() == 110.0
    released = shard.process([update()], now=102.5)
    assert [r.event.event_id for r in released] == ["e1", "e2"]
    assert {r.status for r in released} == {Status.LATE_ENRICHED}
    assert released[0].waited_ms == pytest.approx(2500.0)
    assert shard.next_deadline() is None
    assert shard.tally.late == 2
    assert shard.tally.pending_delta == 0


def test_timeout_applies_defaults_policy() -> None:
    shard = enricher(miss_policy="defaults", defaults=("UNKNOWN",))
    shard.process([event("e1")], now=0.0)
    assert shard.expire(now=9.99) == []
    result = only(shard.expire(now=10.0))
    assert result.status is Status.LOOKUP_MISS
    assert result.miss_reason is MissReason.TIMEOUT
    assert result.row == ("UNKNOWN", None)
    assert result.waited_ms == pytest.approx(10_000.0)
    assert shard.pending_count == 0


def test_pass_through_policy_emits_the_event_unenriched() -> None:
    shard = enricher(miss_policy="pass_through")
    shard.process([event("e1")], now=0.0)
    result = only(shard.expire(now=11.0))
    assert result.status is Status.LOOKUP_MISS
    assert result.row is None


def test_dead_letter_policy_keeps_the_event_payload_and_reason() -> None:
    shard = enricher(miss_policy="dead_letter")
    shard.process([event("e1", price=3.5)], now=0.0)
    letter = shard.expire(now=11.0)[0]
    assert isinstance(letter, DeadLetter)
    assert letter.reason == "lookup_miss"
    assert "timeout" in letter.detail
    assert json.loads(letter.payload) == {"id": "e1", "key": "A", "price": 3.5}
    assert letter.origin == "t/0/e1"


def test_inner_join_keeps_misses_out_of_the_main_output_but_counts_them() -> None:
    shard = enricher(join_type="inner", miss_policy="defaults")
    shard.process([event("e1")], now=0.0)
    assert shard.expire(now=11.0) == []
    assert shard.tally.inner_excluded == 1
    assert shard.tally.missed_out == {MissReason.TIMEOUT: 1}


def test_inner_join_with_dead_letter_policy_sends_misses_to_dead_letters() -> None:
    shard = enricher(join_type="inner", miss_policy="dead_letter")
    shard.process([event("e1")], now=0.0)
    assert [type(x) for x in shard.flush(now=1.0)] == [DeadLetter]


def test_stale_version_is_ignored_and_newer_replaces() -> None:
    shard = enricher()
    shard.process([update(name="v2", version=2), update(name="v1", version=1)], now=0.0)
    assert shard.tally.stale == 1
    assert only(shard.process([event("e1")], now=0.0)).row == ("v2", 2)
    shard.process([update(name="v3", version=3)], now=0.0)
    assert only(shard.process([event("e2")], now=0.0)).row == ("v3", 3)


def test_equal_version_is_not_newer() -> None:
    shard = enricher()
    shard.process([update(name="first", version=5), update(name="again", version=5)], now=0.0)
    assert shard.rows["A"] == ("first", 5)
    assert shard.tally.stale == 1


def test_unversioned_updates_are_last_write_wins() -> None:
    shard = enricher()
    shard.process([update(name="x", version=None), update(name="y", version=None)], now=0.0)
    assert shard.rows["A"] == ("y", None)


def test_tombstone_deletes_and_later_events_miss_again() -> None:
    shard = enricher(miss_policy="pass_through")
    shard.process([update(), update(name=None, version=None)], now=0.0)
    assert shard.rows == {}
    assert shard.tally.deleted == 1
    assert shard.process([event("e1")], now=1.0) == []
    assert shard.pending_count == 1
    result = only(shard.process([update(name="back", version=1)], now=2.0))
    assert result.status is Status.LATE_ENRICHED
    assert result.row == ("back", 1)


def test_tombstone_for_an_absent_row_is_counted() -> None:
    shard = enricher()
    shard.process([update(name=None)], now=0.0)
    assert shard.tally.absent_deletes == 1


def test_per_key_bound_sends_the_oldest_out_under_the_policy() -> None:
    shard = enricher(max_pending_per_key=2, miss_policy="pass_through")
    out = shard.process([event("e1"), event("e2"), event("e3")], now=0.0)
    assert [(r.event.event_id, r.miss_reason) for r in out] == [("e1", MissReason.OVERFLOW)]
    assert shard.pending_count == 2
    released = shard.process([update()], now=1.0)
    assert [r.event.event_id for r in released] == ["e2", "e3"]


def test_per_shard_bound_evicts_the_oldest_across_keys() -> None:
    shard = enricher(max_pending_per_shard=2, miss_policy="pass_through")
    out = shard.process([event("e1", "A"), event("e2", "B"), event("e3", "C")], now=0.0)
    assert [(r.event.event_id, r.miss_reason) for r in out] == [("e1", MissReason.OVERFLOW)]
    assert sorted(shard.pending) == ["B", "C"]


def test_eviction_skips_events_that_already_left() -> None:
    shard = enricher(max_pending_per_shard=2, miss_policy="pass_through")
    shard.process([event("e1", "A"), event("e2", "B")], now=0.0)
    shard.process([update("A")], now=0.5)
    out = shard.process([event("e3", "C"), event("e4", "D")], now=1.0)
    assert [r.event.event_id for r in out] == ["e2"]


def test_end_of_input_flushes_every_waiting_event() -> None:
    shard = enricher(miss_policy="defaults", defaults=(None,))
    shard.process([event("e1", "A"), event("e2", "B"), event("e3", "A")], now=0.0)
    out = shard.flush(now=1.0)
    assert sorted(r.event.event_id for r in out) == ["e1", "e2", "e3"]
    assert {r.miss_reason for r in out} == {MissReason.END_OF_INPUT}
    assert shard.pending_count == 0
    assert shard.next_deadline() is None


def test_expired_events_leave_in_deadline_order_only_once() -> None:
    shard = enricher(miss_policy="pass_through")
    shard.process([event("e1", "A")], now=0.0)
    shard.process([event("e2", "B")], now=5.0)
    assert [r.event.event_id for r in shard.expire(now=12.0)] == ["e1"]
    assert shard.next_deadline() == 15.0
    assert [r.event.event_id for r in shard.expire(now=20.0)] == ["e2"]
    assert shard.expire(now=30.0) == []


def test_snapshot_holds_only_pending_events_and_restores_them() -> None:
    shard = enricher()
    shard.process([update("A")] + [update(f"K{i}") for i in range(1000)], now=0.0)
    shard.process([event("e1", "B"), event("e2", "C")], now=1.0)
    state = shard.snapshot()
    assert all(type(blob) is bytes for blob in state)
    assert [p.event.event_id for p in restore(state)] == ["e1", "e2"]

    resumed = ShardEnricher(shard.config, state)
    assert resumed.rows == {}
    assert resumed.pending_count == 2
    assert resumed.tally.pending_delta == 2
    assert resumed.next_deadline() == 11.0
    released = resumed.process([update("B")], now=3.0)
    assert only(released).waited_ms == pytest.approx(2000.0)


def test_replayed_rows_rebuild_state_without_releasing_pending_events() -> None:
    shard = enricher()
    shard.process([event("e1", "A")], now=0.0)
    resumed = ShardEnricher(shard.config, shard.snapshot())
    replay = [
        update("A", "old", 1)._replace(replay=True),
        update("A", None, None)._replace(replay=True),
    ]
    assert resumed.process(replay, now=1.0) == []
    assert resumed.rows == {}
    assert resumed.pending_count == 1
    assert only(resumed.process([update("A", "new", 2)], now=2.0)).row == ("new", 2)


def caught_up(partition: str, partitions: int = 2) -> CaughtUp:
    return CaughtUp(partition, partitions, "security")


def test_events_are_held_not_missed_until_every_reference_partition_caught_up() -> None:
    shard = enricher(wait_for_reference=True)
    assert shard.process([event("e1", "A"), update("A"), event("e2", "B")], now=0.0) == []
    assert shard.tally.hits == shard.tally.misses == 0
    assert shard.next_deadline() is None
    assert shard.expire(now=100.0) == []
    assert shard.process([caught_up("0")], now=1.0) == []
    assert shard.pending_count == 2

    out = shard.process([caught_up("1"), event("e3", "A")], now=2.0)
    assert [(r.event.event_id, r.status) for r in out] == [
        ("e1", Status.ENRICHED),
        ("e3", Status.ENRICHED),
    ]
    assert out[0].waited_ms == pytest.approx(2000.0)
    assert shard.tally.hits == 2
    assert shard.tally.misses == 1
    assert shard.next_deadline() == 12.0
    late = only(shard.process([update("B")], now=5.0))
    assert (late.event.event_id, late.status) == ("e2", Status.LATE_ENRICHED)
    assert late.waited_ms == pytest.approx(5000.0)


def test_held_events_are_joined_with_the_row_as_it_stands_after_catching_up() -> None:
    shard = enricher(wait_for_reference=True)
    shard.process([update("A", "old", 1), event("e1", "A"), update("A", "new", 2)], now=0.0)
    assert only(shard.process([caught_up("0", partitions=1)], now=1.0)).row == ("new", 2)


def test_a_snapshot_taken_while_holding_resumes_the_events_as_held() -> None:
    shard = enricher(wait_for_reference=True)
    shard.process([event("e1", "A"), event("e2", "B")], now=0.0)
    resumed = ShardEnricher(shard.config, shard.snapshot())
    assert resumed.pending_count == 2
    assert resumed.next_deadline() is None
    out = resumed.process([update("A"), caught_up("0", partitions=1)], now=3.0)
    assert [(r.event.event_id, r.status) for r in out] == [("e1", Status.ENRICHED)]
    assert resumed.next_deadline() == 13.0


def test_resumed_misses_are_released_by_new_rows_during_catch_up_but_not_by_replayed_ones() -> None:
    shard = enricher(wait_for_reference=True)
    shard.process([caught_up("0", partitions=1), event("e1", "A"), event("e2", "B")], now=0.0)
    resumed = ShardEnricher(shard.config, shard.snapshot())
    assert resumed.process([update("A")._replace(replay=True)], now=1.0) == []
    late = only(resumed.process([update("B")], now=2.0))
    assert (late.event.event_id, late.status) == ("e2", Status.LATE_ENRICHED)
    late = only(resumed.process([caught_up("0", partitions=1)], now=3.0))
    assert (late.event.event_id, late.status) == ("e1", Status.LATE_ENRICHED)
    assert resumed.pending_count == 0


def test_holding_is_bounded_per_shard_oldest_out_first() -> None:
    shard = enricher(wait_for_reference=True, max_pending_per_shard=2)
    out = shard.process([event("e1"), event("e2"), event("e3")], now=0.0)
    assert [(r.event.event_id, r.miss_reason) for r in out] == [("e1", MissReason.OVERFLOW)]
    assert shard.pending_count == 2


def test_end_of_input_before_catching_up_looks_held_events_up_then_flushes() -> None:
    shard = enricher(wait_for_reference=True)
    shard.process([update("A"), event("e1", "A"), event("e2", "B")], now=0.0)
    out = shard.flush(now=1.0)
    assert [(r.event.event_id, r.status, r.miss_reason) for r in out] == [
        ("e1", Status.ENRICHED, None),
        ("e2", Status.LOOKUP_MISS, MissReason.END_OF_INPUT),
    ]
    assert shard.pending_count == 0
