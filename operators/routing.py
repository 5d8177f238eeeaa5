"""Where records go: the enrichment shard and the sink partition.

Hashes are stable across processes (crc32, never Python's salted `hash`), so
every worker and every restart sends a key to the same place. Grouping a whole
batch per destination keeps the runtime's cost at one item per destination
per batch rather than one per event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from zlib import crc32

from operators.records import CaughtUp, DeadLetter, Event, PartitionTime, RefUpdate
from operators.sink_rows import EVENT_ID, SinkRow


def names(count: int) -> list[str]:
    """Zero-padded names whose sorted order is their numeric order."""
    width = len(str(count - 1))
    return [f"{i:0{width}d}" for i in range(count)]


def by_shard(
    items: Iterable[Event | RefUpdate],
    shard_names: Sequence[str],
    broadcast: Sequence[CaughtUp | PartitionTime] = (),
) -> list[tuple[str, list[Event | RefUpdate | CaughtUp | PartitionTime]]]:
    """Group records by shard of their lookup id, keeping arrival order.

    `broadcast` markers concern every shard, so each group ends with them,
    after the records they followed.
    """
    count = len(shard_names)
    groups: dict[str, list[Event | RefUpdate | CaughtUp | PartitionTime]] = {}
    get = groups.get
    for item in items:
        shard = shard_names[crc32(item.lookup_id.encode()) % count]
        group = get(shard)
        if group is None:
            groups[shard] = [item]
        else:
            group.append(item)
    if broadcast:
        for shard in shard_names:
            groups.setdefault(shard, []).extend(broadcast)
    return list(groups.items())


def by_partition(
    outputs: Iterable[Iterable[SinkRow | DeadLetter]], partition_names: Sequence[str]
) -> tuple[list[tuple[str, list[SinkRow]]], list[DeadLetter]]:
    """Group sink rows by sink partition of their event id; one partition needs no hashing."""
    count = len(partition_names)
    groups: dict[str, list[SinkRow]] = {}
    dead: list[DeadLetter] = []
    get = groups.get
    for batch in outputs:
        for record in batch:
            if type(record) is DeadLetter:
                dead.append(record)
                continue
            part = (
                partition_names[crc32(record[0][EVENT_ID].encode()) % count]
                if count > 1
                else partition_names[0]
            )
            group = get(part)
            if group is None:
                groups[part] = [record]  # type: ignore[list-item]
            else:
                group.append(record)  # type: ignore[arg-type]
    return list(groups.items()), dead
