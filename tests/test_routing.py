"""Routing is stable across processes and keeps each key's arrival order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from zlib import crc32

from operators import routing
from operators.records import CaughtUp, DeadLetter, Event, Joined, RefUpdate, Status
from operators.sink_rows import RowShape

ROOT = Path(__file__).resolve().parents[1]


def event(event_id: str, key: str) -> Event:
    return Event(event_id, key, None, {}, "o")


def test_names_sort_in_numeric_order() -> None:
    for count in (1, 9, 10, 64, 1000):
        names = routing.names(count)
        assert len(names) == count
        assert sorted(names) == names
        assert [int(n) for n in names] == list(range(count))


def test_by_shard_groups_by_key_and_keeps_arrival_order_per_key() -> None:
    items = [
        event("e1", "A"),
        RefUpdate("B", ("b",), 1, "r"),
        event("e2", "B"),
        RefUpdate("A", ("a",), 1, "r"),
        event("e3", "A"),
    ]
    groups = dict(routing.by_shard(items, routing.names(16)))
    assert sum(len(g) for g in groups.values()) == len(items)
    for key in ("A", "B"):
        mine = [item for item in items if item.lookup_id == key]
        holding = [g for g in groups.values() if any(item.lookup_id == key for item in g)]
        assert len(holding) == 1, "one key, one shard"
        assert [item for item in holding[0] if item.lookup_id == key] == mine


def test_broadcast_markers_end_every_shard_group_after_its_records() -> None:
    marker = CaughtUp("reference/0", 1, "security")
    names = routing.names(4)
    groups = dict(routing.by_shard([event("e1", "A")], names, broadcast=[marker]))
    assert sorted(groups) == names
    for group in groups.values():
        assert group[-1] == marker
    assert sum(len(group) for group in groups.values()) == 1 + len(names)


def test_shard_choice_does_not_depend_on_the_process_hash_seed() -> None:
    code = (
        "from operators import routing; from operators.records import Event;"
        "print([s for s, _ in routing.by_shard([Event('e', k, None, {}, 'o') "
        "for k in 'ABCDEFGH'], routing.names(64))])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_by_partition_routes_by_event_id_and_separates_dead_letters() -> None:
    shape = RowShape((), (), frozenset())
    enriched = [
        shape.of(Joined(event(f"e{i}", "A"), None, None, Status.LOOKUP_MISS, None, 0.0))
        for i in range(50)
    ]
    dead = DeadLetter("lookup_miss", "x", None, None, "o")
    names = routing.names(4)
    groups, letters = routing.by_partition([[*enriched[:25], dead], enriched[25:]], names)
    assert letters == [dead]
    again, _ = routing.by_partition([enriched], names)
    assert dict(groups) == dict(again)
    assert sorted(r.event_id for _, g in groups for r in g) == sorted(r.event_id for r in enriched)
    assert all(names[crc32(r.event_id.encode()) % 4] == part for part, g in groups for r in g)
