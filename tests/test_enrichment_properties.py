"""For any interleaving, every event comes out exactly once and correctly.

A model holds the reference rows as a plain dict; the enricher under test is
checked against it after every step, including restarts that rebuild rows by
replaying the reference history and resume pending events from a snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parked import ParkedShard

from operators import waiting
from operators.enrichment import EnrichConfig, ShardEnricher
from operators.records import DeadLetter, Event, Joined, MissReason, RefUpdate, Status

KEYS = ["A", "B", "C"]
TIMEOUT = 5.0

ops = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.sampled_from(KEYS)),
        st.tuples(st.just("update"), st.sampled_from(KEYS), st.integers(0, 6)),
        st.tuples(st.just("delete"), st.sampled_from(KEYS)),
        st.tuples(st.just("tick"), st.floats(0.0, 4.0)),
        st.tuples(st.just("restart")),
    ),
    max_size=60,
)
configs = st.builds(
    EnrichConfig,
    timeout_seconds=st.just(TIMEOUT),
    miss_policy=st.sampled_from(["defaults", "dead_letter", "pass_through"]),
    join_type=st.sampled_from(["left", "inner"]),
    defaults=st.just(("default",)),
    max_pending_per_key=st.integers(1, 4),
    max_pending_per_shard=st.integers(1, 8),
    max_pending_bytes_per_shard=st.none() | st.integers(100, 1_000),
)


def within_bounds(shard: Any, config: EnrichConfig) -> None:
    budget = config.max_pending_bytes_per_shard
    if isinstance(shard, ShardEnricher):
        assert shard.pending_bytes == sum(map(waiting.size, shard.snapshot()))
        assert shard.pending_bytes <= (budget or shard.pending_bytes)
    else:
        # The join bounds what it counts, which may include events already timed out.
        assert shard.join.pending_count <= config.max_pending_per_shard
        assert shard.join.pending_bytes <= (budget or shard.join.pending_bytes)
        assert shard.pending_count <= shard.join.pending_count


@pytest.mark.parametrize("make", [ShardEnricher, ParkedShard], ids=["in_shard", "parked"])
@settings(max_examples=400, deadline=None)
@given(ops, configs)
def test_every_event_leaves_exactly_once_with_the_row_held_then(
    make: Callable[..., Any], steps: list[tuple], config: EnrichConfig
) -> None:
    shard = make(config)
    model: dict[str, tuple[str, int]] = {}
    history: list[RefUpdate] = []
    sent: dict[str, str] = {}
    seen: dict[str, object] = {}
    inner_excluded = 0
    now = 0.0

    def collect(out: list) -> None:
        nonlocal inner_excluded
        for record in out:
            if isinstance(record, DeadLetter):
                event_id = record.origin
                assert record.reason == "lookup_miss"
                assert config.miss_policy == "dead_letter"
            else:
                assert isinstance(record, Joined)
                event_id = record.event.event_id
                key = record.event.lookup_id
                if record.status is Status.LOOKUP_MISS:
                    assert config.join_type == "left"
                    assert config.miss_policy != "dead_letter"
                    expected = ("default", None) if config.miss_policy == "defaults" else None
                    assert record.row == expected
                else:
                    assert key in model, "enriched with a row the model does not hold"
                    assert record.row == (*(model[key][0],), model[key][1])
                    assert record.version == model[key][1]
            assert event_id not in seen, f"{event_id} came out twice"
            seen[event_id] = record
        inner_excluded = shard.tally.inner_excluded

    for number, step in enumerate(steps):
        if step[0] == "event":
            event_id = f"e{number}"
            sent[event_id] = step[1]
            event = Event(event_id, step[1], None, {}, event_id)
            collect(shard.process([event], now))
        elif step[0] in ("update", "delete"):
            key = step[1]
            if step[0] == "update":
                version = step[2]
                upd = RefUpdate(key, (f"{key}v{version}",), version, "ref")
                if key not in model or version > model[key][1]:
                    model[key] = (f"{key}v{version}", version)
            else:
                upd = RefUpdate(key, None, None, "ref")
                model.pop(key, None)
            history.append(upd)
            collect(shard.process([upd], now))
        elif step[0] == "tick":
            now += step[1]
            collect(shard.expire(now))
        else:
            excluded = shard.tally.inner_excluded
            shard = make(config, shard.snapshot())
            shard.tally.inner_excluded = excluded
            assert shard.process([u._replace(replay=True) for u in history], now) == []
            assert shard.rows == {k: (name, version) for k, (name, version) in model.items()}
        for key, queue in shard.pending.items():
            assert key not in model, "an event waits although its row is held"
            assert len(queue) <= config.max_pending_per_key
        assert shard.pending_count <= config.max_pending_per_shard
        within_bounds(shard, config)

    collect(shard.flush(now + 1))
    unseen = set(sent) - set(seen)
    if config.join_type == "left":
        assert not unseen, "an event was lost"
    else:
        dead = sum(1 for r in seen.values() if isinstance(r, DeadLetter))
        assert len(unseen) + dead == inner_excluded, "an inner-join miss was not accounted for"
    for record in seen.values():
        if isinstance(record, Joined) and record.status is Status.LOOKUP_MISS:
            assert record.miss_reason in set(MissReason)
