"""The batch functions the dataflow's steps run between decoding, the lookups and the sink.

Each takes a batch and returns a mix of routed groups (`(destination, records)`,
a plain tuple) and dead letters; `is_routed` tells them apart, so a stream is
split without a closure in the wiring. Metrics are recorded through a callback
handed in, so the functions stay pure and are tested without Bytewax.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from operators import routing
from operators.arrival import ArrivalNumbers
from operators.chain import Stage, advance, finish
from operators.decode import DecodedBatch, Decoder, decode_batch
from operators.parking import Message, Parcels, by_segment
from operators.records import (
    CaughtUp,
    DeadLetter,
    Event,
    Joined,
    PartitionTime,
    RawRecord,
    RefUpdate,
)
from operators.sink_rows import RowShape, SinkRow

Routed = tuple[str, list[Any]]
"""A group of records for one destination: a shard of a lookup, or a sink partition."""
Lookups = list[tuple[str, Any]]
"""What a lookup's steps emit: (shard, its outputs) per shard of the batch, and from the
join, (shard, `Parcels`) for the segments of its misses."""


def is_routed(item: object) -> TypeGuard[Routed]:
    """A routed group, not a dead letter (a NamedTuple, so never exactly `tuple`)."""
    return type(item) is tuple


def to_segments(batch: Lookups) -> list[tuple[str, list[Message]]]:
    """The join's messages to the segments of its shard, grouped by their state key.

    A join emits its outputs and its `Parcels` in one stream, which the next
    steps read apart by type: splitting it would cost a Python call per item.
    """
    return [
        group
        for shard, outputs in batch
        if type(outputs) is Parcels
        for group in by_segment(shard, outputs.messages)
    ]


def for_lookup(name: str, item: tuple[str, Routed]) -> Routed | None:
    """The shard group of `item` when it is addressed to lookup `name`."""
    return item[1] if item[0] == name else None


@dataclass(frozen=True)
class DecodeAndRoute:
    """Decode a source batch and group each lookup's records by its shard.

    Caught-up markers go to every shard of their lookup; invalid records come
    out as dead letters. `on_decoded` gets each decoded batch and the source
    batch's size (for the metrics). `numbers` numbers the events in arrival
    order (`operators.arrival`); without it every event is number 0.
    """

    decoder: Decoder
    lookups: Sequence[str]
    shard_names: Sequence[str]
    on_decoded: Callable[[DecodedBatch, int], None] = lambda decoded, size: None
    numbers: ArrivalNumbers | None = None
    clocked: frozenset[str] = frozenset()
    """The lookups whose timeouts run on event time: every shard of each hears, after
    the batch's records, each event partition's largest event time (`PartitionTime`)."""
    event_partitions: int = 0
    """How many event partitions there are, 0 when unknown (`operators.event_clock`)."""

    def __call__(self, batch: list[RawRecord | CaughtUp]) -> list[tuple[str, Routed] | DeadLetter]:
        first = 0 if self.numbers is None else self.numbers.take(len(batch))
        decoded = decode_batch(self.decoder, self.lookups[0], batch, first)
        self.on_decoded(decoded, len(batch))
        times = self._partition_times(decoded) if self.clocked else []
        routed: list[tuple[str, Routed] | DeadLetter] = []
        for name in self.lookups:
            items = decoded.good.get(name, ())
            markers: list[CaughtUp | PartitionTime] = [
                mark for mark in decoded.caught_up if mark.lookup == name
            ]
            if name in self.clocked:
                markers.extend(times)
            if items or markers:
                groups = routing.by_shard(items, self.shard_names, markers)
                routed.extend((name, group) for group in groups)
        return [*routed, *decoded.bad]

    def _partition_times(self, decoded: DecodedBatch) -> list[PartitionTime]:
        """Each event partition's largest event time in the batch; the partition is the
        events' origin without its offset."""
        highs: dict[str, float] = {}
        for item in decoded.good.get(self.lookups[0], ()):
            if type(item) is Event and item.event_time is not None:
                origin = item.origin
                partition = origin[: origin.rfind("/")]
                if item.event_time > highs.get(partition, -math.inf):
                    highs[partition] = item.event_time
        count = self.event_partitions
        return [PartitionTime(partition, high, count) for partition, high in highs.items()]


@dataclass(frozen=True)
class HandOn:
    """A lookup's outputs to the next lookup: enriched events re-keyed by `next_key`, by shard.

    A dead letter of the lookup goes on as it is.
    """

    stage: Stage
    next_key: str
    shard_names: Sequence[str]

    def __call__(self, batch: Lookups) -> list[Routed | DeadLetter]:
        events: list[Event | RefUpdate] = []
        dead: list[DeadLetter] = []
        for _, outputs in batch:
            if type(outputs) is Parcels:
                continue  # for the segments (`to_segments`)
            for rec in outputs:
                if type(rec) is Joined:
                    events.append(advance(rec, self.stage, self.next_key))
                else:
                    dead.append(rec)
        return [*routing.by_shard(events, self.shard_names), *dead]


@dataclass(frozen=True)
class ToSink:
    """The last lookup's outputs as sink rows grouped by sink partition, and dead letters.

    Each event's row is built once, here (`rows`), and travels to the
    database as it is.
    """

    last: Stage
    earlier: tuple[str, ...]
    """The columns every earlier lookup added to the event, in chain order."""
    lookup_field: str
    partition_names: Sequence[str]
    rows: RowShape

    def __call__(self, batch: Lookups) -> list[Routed | DeadLetter]:
        last, earlier, field, rows = self.last, self.earlier, self.lookup_field, self.rows
        finished = (
            [
                finish(rec, last, earlier, field, rows) if type(rec) is Joined else rec
                for rec in outputs
            ]
            for _, outputs in batch
            if type(outputs) is not Parcels
        )
        groups, dead = routing.by_partition(finished, self.partition_names)
        return [*groups, *dead]


def enriched_of(batch: list[Routed]) -> list[SinkRow]:
    """The sink rows of a batch of sink groups, in order."""
    return [row for _, out in batch for row in out if type(row) is SinkRow]
