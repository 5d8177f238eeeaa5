"""As-of lookups: each event joins the version valid at its own time.

Driven through `ParkedShard`, the join and its segments wired as the dataflow
wires them, so releases that cross into segments are covered too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from parked import ParkedShard

from operators.as_of import new_join
from operators.enrichment import EnrichConfig
from operators.history import Versions
from operators.records import DeadLetter, Event, Joined, MissReason, RefUpdate, Status

AS_OF = EnrichConfig(timeout_seconds=5.0, mode="as_of", miss_policy="pass_through")


def event(event_id: str, key: str, when: float | None) -> Event:
    return Event(event_id, key, when, {}, event_id)


def version(key: str, valid_from: float, number: int, name: str = "") -> RefUpdate:
    row = (name or f"{key}@{valid_from}",)
    return RefUpdate(key, row, number, "ref", valid_from=valid_from, at=valid_from)


def tombstone(key: str, when: float | None) -> RefUpdate:
    return RefUpdate(key, None, None, "ref", at=when, valid_from=when)


def outcome(out: Sequence[Any]) -> list[tuple[str, str, Any, MissReason | None]]:
    return [
        (rec.event.event_id, str(rec.status), rec.row and rec.row[0], rec.miss_reason)
        for rec in out
        if isinstance(rec, Joined)
    ]


def test_events_join_the_version_valid_at_their_time() -> None:
    shard = ParkedShard(AS_OF)
    shard.process([version("S", 100.0, 1, "old"), version("S", 200.0, 2, "new")], 0.0)
    out = shard.process(
        [event("a", "S", 150.0), event("b", "S", 200.0), event("c", "S", 250.0)], 0.0
    )
    assert outcome(out) == [
        ("a", "enriched", "old", None),
        ("b", "enriched", "new", None),
        ("c", "enriched", "new", None),
    ]
    assert [rec.version for rec in out] == [1, 2, 2]


def test_an_event_without_a_time_joins_the_newest_version() -> None:
    shard = ParkedShard(AS_OF)
    shard.process([version("S", 200.0, 2, "new"), version("S", 100.0, 1, "old")], 0.0)
    assert outcome(shard.process([event("a", "S", None)], 0.0)) == [("a", "enriched", "new", None)]


def test_an_event_before_every_version_waits_for_an_older_one() -> None:
    shard = ParkedShard(AS_OF)
    shard.process([version("S", 200.0, 2, "new")], 0.0)
    assert shard.process([event("a", "S", 150.0)], 0.0) == []
    # A version valid only later releases nothing; one valid at 150 does.
    assert shard.process([version("S", 300.0, 3, "newer")], 1.0) == []
    out = shard.process([version("S", 100.0, 1, "old")], 2.0)
    assert outcome(out) == [("a", "late_enriched", "old", None)]
    assert out[0].waited_ms == 2000.0


def test_a_tombstone_ends_validity_from_its_time_on() -> None:
    shard = ParkedShard(AS_OF)
    shard.process([version("S", 100.0, 1, "old"), tombstone("S", 200.0)], 0.0)
    out = shard.process([event("a", "S", 150.0), event("b", "S", 250.0)], 0.0)
    assert outcome(out) == [("a", "enriched", "old", None)]
    # b waits: a version from 300 on does not cover it, one from 240 does.
    assert shard.process([version("S", 300.0, 2)], 1.0) == []
    assert outcome(shard.process([version("S", 240.0, 2, "back")], 1.0)) == [
        ("b", "late_enriched", "back", None)
    ]


def test_a_tombstone_without_a_time_removes_the_whole_key() -> None:
    shard = ParkedShard(AS_OF)
    shard.process([version("S", 100.0, 1), tombstone("S", None)], 0.0)
    assert shard.join.history == {}
    assert shard.process([event("a", "S", 150.0)], 0.0) == []


def test_history_is_bounded_and_older_events_miss_as_before_history() -> None:
    config = replace(AS_OF, history_seconds=100.0, history_versions=3)
    shard = ParkedShard(config)
    shard.process([version("S", float(t), t) for t in (100, 150, 190, 260, 270)], 0.0)
    kept = shard.join.history["S"]
    # 100 and 150 are superseded before 270 - 100 = 170; 190 is needed from 170 on.
    assert kept.times == [190.0, 260.0, 270.0] and kept.start == 190.0
    out = shard.process([event("a", "S", 180.0), event("b", "S", 195.0)], 0.0)
    assert outcome(out) == [
        ("a", "lookup_miss", None, MissReason.BEFORE_HISTORY),
        ("b", "enriched", "S@190.0", None),
    ]


def test_a_repeated_validity_time_keeps_the_higher_version() -> None:
    versions = Versions()
    assert versions.put(100.0, ("a", 2))
    assert not versions.put(100.0, ("b", 1)), "a lower version at the same time is stale"
    assert versions.put(100.0, ("c", 3))
    assert versions.at(100.0) == ("c", 3)
    assert versions.put(100.0, None) and versions.at(150.0) is None


def test_waiting_events_and_their_times_survive_a_restart() -> None:
    """Rows are rebuilt by replaying the topic; the events' times come from the snapshot."""
    shard = ParkedShard(AS_OF)
    shard.process([version("S", 200.0, 2)], 0.0)
    shard.process([event("a", "S", 150.0), event("b", "S", 50.0)], 0.0)
    resumed = ParkedShard(AS_OF, shard.snapshot())
    replayed = resumed.process([version("S", 200.0, 2)._replace(replay=True)], 1.0)
    assert replayed == []
    out = resumed.process([version("S", 100.0, 1, "v1")], 2.0)
    assert outcome(out) == [("a", "late_enriched", "v1", None)]
    flushed = resumed.flush(3.0)
    assert outcome(flushed) == [("b", "lookup_miss", None, MissReason.END_OF_INPUT)]


def test_latest_mode_is_unchanged_by_validity_times() -> None:
    """The default mode ignores validity times: the highest version wins, as before."""
    shard = ParkedShard(replace(AS_OF, mode="latest"))
    shard.process([version("S", 200.0, 2, "new"), version("S", 100.0, 1, "old")], 0.0)
    assert outcome(shard.process([event("a", "S", 150.0)], 0.0)) == [("a", "enriched", "new", None)]


# The property: any interleaving of versions, tombstones, events, ticks and restarts.

KEYS = ["A", "B"]
TIMES = st.integers(0, 12).map(float)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.sampled_from(KEYS), st.none() | TIMES),
        st.tuples(st.just("version"), st.sampled_from(KEYS), TIMES, st.integers(0, 5)),
        st.tuples(st.just("tombstone"), st.sampled_from(KEYS), TIMES),
        st.tuples(st.just("tick"), st.floats(0.0, 4.0)),
        st.tuples(st.just("restart")),
    ),
    max_size=50,
)
configs = st.builds(
    EnrichConfig,
    timeout_seconds=st.just(5.0),
    mode=st.just("as_of"),
    miss_policy=st.sampled_from(["defaults", "dead_letter", "pass_through"]),
    defaults=st.just(("default",)),
    max_pending_per_key=st.integers(1, 4),
    max_pending_per_shard=st.integers(1, 8),
    history_seconds=st.just(1_000.0),
    history_versions=st.integers(1, 4),
)


class Model:
    """Every version received, kept whole: what was valid when, by the plain rule."""

    def __init__(self) -> None:
        self.versions: dict[str, dict[float, tuple[str, int] | None]] = {}

    def receive(self, key: str, when: float, row: tuple[str, int] | None) -> None:
        held = self.versions.setdefault(key, {})
        current = held.get(when, "absent")
        if row is not None and isinstance(current, tuple) and row[1] <= current[1]:
            return  # a version not newer than the row at the same time is stale
        held[when] = row

    def delete_all(self, key: str) -> None:
        self.versions.pop(key, None)

    def at(self, key: str, when: float | None) -> tuple[str, int] | None:
        held = self.versions.get(key, {})
        valid = [t for t in held if when is None or t <= when]
        return held[max(valid)] if valid else None

    def kept_fewer_than(self, key: str, bound: int) -> bool:
        return len(self.versions.get(key, {})) <= bound


@settings(max_examples=500, deadline=None)
@given(ops, configs)
def test_each_event_carries_the_version_valid_at_its_time_or_leaves_as_a_miss(
    steps: list[tuple[Any, ...]], config: EnrichConfig
) -> None:
    """Among the versions received before it leaves; every event leaves exactly once."""
    shard = ParkedShard(config)
    model = Model()
    received: list[RefUpdate] = []
    times: dict[str, tuple[str, float | None]] = {}
    seen: set[str] = set()
    now = 0.0

    def check(out: list[Any]) -> None:
        for record in out:
            if isinstance(record, DeadLetter):
                event_id = record.origin
                assert config.miss_policy == "dead_letter"
                key, when = times[event_id]
                miss = True
            else:
                event_id = record.event.event_id
                key, when = times[event_id]
                miss = record.status is Status.LOOKUP_MISS
                if not miss:
                    expected = model.at(key, when)
                    assert expected is not None, "joined with no version valid at its time"
                    assert (record.row, record.version) == ((expected[0], expected[1]), expected[1])
                elif record.miss_reason is MissReason.BEFORE_HISTORY:
                    assert not model.kept_fewer_than(key, config.history_versions)
            if miss:
                # Had a valid version arrived while it waited, it would have been released,
                # unless the history bound dropped that version at once.
                assert model.at(key, when) is None or not model.kept_fewer_than(
                    key, config.history_versions
                ), "a miss although a version valid at its time was kept"
            assert event_id not in seen, f"{event_id} came out twice"
            seen.add(event_id)

    for number, step in enumerate(steps):
        kind = step[0]
        if kind == "event":
            event_id = f"e{number}"
            times[event_id] = (step[1], step[2])
            check(shard.process([event(event_id, step[1], step[2])], now))
        elif kind == "version":
            _, key, when, number_ = step
            update = RefUpdate(key, (f"{key}{number_}",), number_, "ref", valid_from=when)
            model.receive(key, when, (f"{key}{number_}", number_))
            received.append(update)
            check(shard.process([update], now))
        elif kind == "tombstone":
            _, key, when = step
            update = tombstone(key, when)
            model.receive(key, when, None)
            received.append(update)
            check(shard.process([update], now))
        elif kind == "tick":
            now += step[1]
            check(shard.expire(now))
        else:
            shard = ParkedShard(config, shard.snapshot())
            check(shard.process([u._replace(replay=True) for u in received], now))
    check(shard.flush(now + 1.0))
    assert seen == set(times), "an event was lost"


def test_a_deleted_key_is_forgotten_once_its_deletion_leaves_the_history_window() -> None:
    """Else keys that come and go would grow the state for ever; a deletion of a key never
    seen is kept too (an older version may still come) and goes the same way."""
    join = new_join(replace(AS_OF, history_seconds=100.0))
    join.process([version("S", 10.0, 1), tombstone("S", 20.0), tombstone("NEVER", 30.0)], 0.0)
    assert set(join.history) == {"S", "NEVER"}  # type: ignore[attr-defined]
    join.process([version("OTHER", 121.0, 1)], 0.0)
    assert set(join.history) == {"NEVER", "OTHER"}, "S's deletion (20) is before 121 - 100"  # type: ignore[attr-defined]
    join.process([version("OTHER", 131.0, 2)], 0.0)
    assert set(join.history) == {"OTHER"}  # type: ignore[attr-defined]
    # A key deleted and then back is not forgotten.
    join.process([tombstone("OTHER", 140.0), version("OTHER", 150.0, 3)], 0.0)
    join.process([version("LAST", 400.0, 1)], 0.0)
    assert set(join.history) == {"OTHER", "LAST"}  # type: ignore[attr-defined]


def test_events_resumed_from_a_snapshot_before_segments_keep_their_times() -> None:
    """A snapshot of a version that kept waiting events in the join: they are parked on
    the first call, and the as-of book reads each one's time from its encoding."""
    from operators import waiting

    blobs = [waiting.encode(event("a", "S", 50.0), 1.0, 6.0)]
    join = new_join(AS_OF, blobs)
    join.process([], 2.0)
    assert join.times == {"S": {1: [50.0]}}  # type: ignore[attr-defined]
    join.process([version("S", 70.0, 1)], 3.0)
    assert join.times == {"S": {1: [50.0]}}, "70 is not valid at 50: it still waits"  # type: ignore[attr-defined]
    join.process([version("S", 40.0, 1)], 3.0)
    assert join.times == {}  # type: ignore[attr-defined]
