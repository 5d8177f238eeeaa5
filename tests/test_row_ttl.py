"""Row TTL: a key whose row is not refreshed within the TTL is dropped, counted, and its
events then miss at once as `row_expired`, in both modes and on both clocks."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from parked import ParkedShard

from operators.as_of import new_join
from operators.enrichment import EnrichConfig, Tally
from operators.records import Event, Joined, MissReason, PartitionTime, RefUpdate

TTL = EnrichConfig(timeout_seconds=5.0, row_ttl_seconds=10.0, miss_policy="pass_through")


def event(event_id: str, key: str, when: float | None = None) -> Event:
    return Event(event_id, key, when, {}, f"p/{event_id}")


def row(key: str, at: float | None = None, version: int = 1) -> RefUpdate:
    return RefUpdate(key, (f"{key}-v{version}",), version, "ref", at=at, valid_from=at or 0.0)


def outcome(out: list[Any]) -> list[tuple[str, str, MissReason | None]]:
    return [(r.event.event_id, str(r.status), r.miss_reason) for r in out if type(r) is Joined]


def test_a_row_not_refreshed_within_the_ttl_is_dropped_and_its_events_miss_at_once() -> None:
    join = new_join(TTL)
    join.process([row("K"), row("M")], 0.0)
    join.process([row("M", version=2)], 6.0)  # M refreshed at 6
    assert join.next_deadline() == 10.0, "the next notification is K's TTL"
    join.expire(9.0)
    assert outcome(join.process([event("a", "K")], 9.0)) == [("a", "enriched", None)]
    join.tally = Tally()
    join.expire(10.5)
    assert join.tally.ttl_dropped == 1 and join.tally.rows_delta == -1
    assert set(join.rows) == {"M"}
    out = join.process([event("b", "K"), event("c", "M")], 11.0)
    assert outcome(out) == [("b", "lookup_miss", MissReason.ROW_EXPIRED), ("c", "enriched", None)]
    assert join.take_parcels() == [], "an expired key's event does not wait"
    # A new row brings the key back.
    join.process([row("K", version=3)], 12.0)
    assert outcome(join.process([event("d", "K")], 12.0)) == [("d", "enriched", None)]


def test_the_record_time_is_the_refresh_time_when_there_is_one() -> None:
    """A row re-read after a restart keeps its age: its Kafka timestamp, not the restart."""
    join = new_join(TTL)
    join.process([row("K", at=-8.0)], 0.0)
    join.expire(1.9)
    assert "K" in join.rows
    join.expire(2.1)
    assert "K" not in join.rows


def test_on_the_event_clock_the_ttl_runs_on_the_watermark() -> None:
    config = replace(TTL, clock="event")
    shard = ParkedShard(config)
    shard.process([row("K", at=100.0), PartitionTime("p", 105.0, 1)], 0.0)
    shard.process([PartitionTime("p", 109.0, 1)], 1_000.0)
    assert "K" in shard.rows, "an hour of system time is nothing on the event clock"
    shard.process([PartitionTime("p", 110.5, 1)], 1_001.0)
    assert "K" not in shard.rows
    out = shard.process([event("a", "K", 110.0)], 1_001.0)
    assert outcome(out) == [("a", "lookup_miss", MissReason.ROW_EXPIRED)]


def test_an_as_of_key_loses_its_whole_history() -> None:
    join = new_join(replace(TTL, mode="as_of"))
    join.process([row("K", at=1.0), row("K", at=5.0, version=2)], 5.0)
    assert len(join.history["K"]) == 2  # type: ignore[attr-defined]
    join.expire(15.5)
    assert "K" not in join.history  # type: ignore[attr-defined]
    out = join.process([event("a", "K", 3.0)], 16.0)
    assert outcome(out) == [("a", "lookup_miss", MissReason.ROW_EXPIRED)]


def test_a_tombstone_clears_the_expiry() -> None:
    """A deleted key is a plain miss again: its events wait for a new row."""
    join = new_join(TTL)
    join.process([row("K")], 0.0)
    join.expire(11.0)
    assert "K" in join.expired
    join.process([RefUpdate("K", None, None, "ref")], 12.0)
    assert "K" not in join.expired
    assert join.process([event("a", "K")], 12.0) == []
    assert join.take_parcels(), "the event waits in a segment"


def test_an_as_of_tombstone_older_than_the_newest_row_leaves_it_under_the_ttl() -> None:
    join = new_join(replace(TTL, mode="as_of"))
    join.process([row("K", at=5.0, version=2)], 5.0)
    join.process([RefUpdate("K", None, None, "ref", at=1.0, valid_from=1.0)], 6.0)
    assert join.refreshed == {"K": 5.0}, "the tombstone at 1 neither ends nor refreshes it"
    join.expire(14.9)
    assert "K" in join.history  # type: ignore[attr-defined]
    join.expire(15.5)
    assert "K" not in join.history  # type: ignore[attr-defined]
    assert "K" in join.expired
