"""Event-time timeouts: the watermark, its idle rule, and the join on the event clock.

The system clock (`now`) is passed in by hand, so each test says exactly when
the idle rule may act; nothing here sleeps.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from parked import ParkedShard

from operators.as_of import new_join
from operators.enrichment import EnrichConfig
from operators.event_clock import Watermark
from operators.records import Event, Joined, MissReason, PartitionTime, RefUpdate

IDLE = 30.0
EVENT_CLOCK = EnrichConfig(
    timeout_seconds=5.0, clock="event", idle_seconds=IDLE, miss_policy="pass_through"
)


def mark(partition: str, high: float, partitions: int = 2) -> PartitionTime:
    return PartitionTime(partition, high, partitions)


def event(event_id: str, key: str, when: float | None) -> Event:
    return Event(event_id, key, when, {}, f"p/{event_id}")


def row(key: str, at: float | None) -> RefUpdate:
    return RefUpdate(key, (f"{key}-row",), 1, "ref", at=at)


def outcome(out: list[Any]) -> list[tuple[str, str, MissReason | None]]:
    return [(r.event.event_id, str(r.status), r.miss_reason) for r in out if type(r) is Joined]


class TestWatermark:
    def test_is_the_slowest_partition_less_the_lateness_and_never_goes_back(self) -> None:
        clock = Watermark(lateness=2.0, idle=IDLE)
        clock.observe(mark("a", 100.0), 0.0)
        assert clock.current(0.0) == -math.inf, "partition b was never heard from"
        clock.observe(mark("b", 90.0), 0.0)
        assert clock.current(0.0) == 88.0
        clock.observe(mark("b", 95.0), 1.0)
        assert clock.current(1.0) == 93.0
        clock.observe(mark("b", 50.0), 2.0)  # a partition's high never moves back
        assert clock.current(2.0) == 93.0

    def test_a_silent_partition_stops_holding_it_back_after_the_idle_time(self) -> None:
        clock = Watermark(lateness=0.0, idle=IDLE)
        clock.observe(mark("a", 100.0), 0.0)
        clock.observe(mark("b", 10.0), 0.0)
        clock.observe(mark("a", 200.0), 29.0)
        assert clock.current(29.0) == 10.0
        assert clock.current(31.0) == 200.0, "b has been silent for more than 30 s"
        assert clock.next_change(31.0) == 29.0 + IDLE

    def test_a_silent_stream_advances_with_the_system_clock(self) -> None:
        clock = Watermark(lateness=0.0, idle=IDLE)
        clock.observe(mark("a", 100.0, 1), 0.0)
        assert clock.current(10.0) == 100.0
        assert clock.current(IDLE + 5.0) == 105.0
        assert clock.next_change(IDLE + 5.0) == IDLE + 6.0

    def test_with_an_unknown_partition_count_it_waits_the_idle_time_after_a_start(self) -> None:
        clock = Watermark(lateness=0.0, idle=IDLE)
        clock.observe(mark("a", 100.0, partitions=0), 0.0)
        assert clock.current(IDLE - 1) == -math.inf
        assert clock.current(IDLE + 1) == 100.0 + 1.0  # quiet since: the stream rule

    def test_its_state_resumes_without_going_back(self) -> None:
        clock = Watermark(lateness=0.0, idle=IDLE)
        clock.observe(mark("a", 100.0), 0.0)
        clock.observe(mark("b", 80.0), 0.0)
        assert clock.current(0.0) == 80.0
        resumed = Watermark(0.0, IDLE, clock.state())
        resumed.observe(mark("a", 120.0), 500.0)
        assert resumed.current(500.0) == 80.0, "b, restored, is not idle right after a start"
        assert resumed.final() == 80.0


def fed(shard: ParkedShard, items: list[Any], now: float = 0.0) -> list[Any]:
    return shard.process(items, now)


class TestJoinOnTheEventClock:
    def test_a_miss_times_out_when_the_watermark_passes_its_deadline_not_the_clock(
        self,
    ) -> None:
        shard = ParkedShard(EVENT_CLOCK)
        fed(shard, [event("e", "K", 100.0), mark("a", 100.0), mark("b", 100.0)])
        # An hour of system time with both partitions active moves nothing.
        assert fed(shard, [mark("a", 104.0), mark("b", 104.0)], 10.0) == []
        assert shard.expire(20.0) == []
        out = fed(shard, [mark("a", 106.0), mark("b", 106.0)], 21.0)
        assert outcome(out) == [("e", "lookup_miss", MissReason.TIMEOUT)]

    def test_a_row_within_the_deadline_releases_and_one_after_it_times_out(self) -> None:
        """However far the watermark has come: the row's own time decides."""
        shard = ParkedShard(EVENT_CLOCK)
        fed(shard, [event("early", "K", 100.0), event("late", "L", 100.0)])
        out = fed(shard, [row("K", 104.9), row("L", 105.1)])
        assert outcome(out) == [
            ("early", "late_enriched", None),
            ("late", "lookup_miss", MissReason.TIMEOUT),
        ]

    def test_partition_interleaving_changes_nothing(self) -> None:
        """Two orders of the same two partitions' records, one outcome."""
        part_a = [event("a1", "K", 100.0), mark("a", 100.0), row("K", 103.0), mark("a", 103.0)]
        part_b = [event("b1", "M", 100.0), mark("b", 100.0), mark("b", 110.0)]
        results = []
        for order in (part_a + part_b, part_b + part_a, [*part_b[:2], *part_a, part_b[2]]):
            shard = ParkedShard(EVENT_CLOCK)
            out = fed(shard, order) + shard.flush(1.0)
            results.append(sorted(outcome(out)))
        assert results[0] == results[1] == results[2]
        assert results[0] == [
            ("a1", "late_enriched", None),
            ("b1", "lookup_miss", MissReason.END_OF_INPUT),
        ]

    def test_at_end_of_input_the_final_watermark_times_out_what_it_passed(self) -> None:
        shard = ParkedShard(EVENT_CLOCK)
        # Partition b is never heard from, so the watermark stays put while running.
        assert (
            fed(shard, [event("old", "K", 90.0), event("new", "K", 99.0), mark("a", 100.0)]) == []
        )
        out = shard.flush(1.0)
        assert sorted(outcome(out)) == [
            ("new", "lookup_miss", MissReason.END_OF_INPUT),
            ("old", "lookup_miss", MissReason.TIMEOUT),
        ]

    def test_an_event_without_a_time_waits_from_the_newest_time_seen(self) -> None:
        shard = ParkedShard(EVENT_CLOCK)
        fed(shard, [mark("a", 100.0), mark("b", 200.0)])
        fed(shard, [event("e", "K", None)])
        assert fed(shard, [mark("a", 204.0)]) == []
        out = fed(shard, [mark("a", 206.0), mark("b", 206.0)])
        assert outcome(out) == [("e", "lookup_miss", MissReason.TIMEOUT)]

    def test_the_watermark_and_waiting_events_survive_a_restart(self) -> None:
        shard = ParkedShard(EVENT_CLOCK)
        fed(shard, [event("e", "K", 100.0), mark("a", 103.0), mark("b", 103.0)])
        resumed = ParkedShard(EVENT_CLOCK, shard.snapshot())
        assert resumed.join.watermark is not None
        assert resumed.join.watermark.highs == {"a": 103.0, "b": 103.0}
        assert fed(resumed, [mark("a", 104.0)], 1_000.0) == []
        out = fed(resumed, [mark("a", 106.0), mark("b", 106.0)], 1_001.0)
        assert outcome(out) == [("e", "lookup_miss", MissReason.TIMEOUT)]

    def test_the_processing_clock_ignores_partition_times(self) -> None:
        shard = ParkedShard(replace(EVENT_CLOCK, clock="processing"))
        fed(shard, [event("e", "K", 100.0), mark("a", 1e9), mark("b", 1e9)], 0.0)
        assert shard.expire(4.0) == []
        assert outcome(shard.expire(6.5)) == [("e", "lookup_miss", MissReason.TIMEOUT)]


def test_the_join_reports_its_watermark_for_the_gauge() -> None:
    join = new_join(EVENT_CLOCK)
    join.process([mark("a", 100.0)], 0.0)
    assert join.tally.watermark is None, "not known yet: partition b was never heard from"
    join.process([mark("b", 90.0)], 0.0)
    assert join.tally.watermark == 90.0
    assert new_join(replace(EVENT_CLOCK, clock="processing")).tally.watermark is None
