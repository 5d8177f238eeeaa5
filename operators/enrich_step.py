"""Bytewax adapters around `ShardEnricher` (one logic per shard key) and parking.

The dataflow runs `JoinLogic` per shard and `SegmentLogic` per segment of
parked misses (`operators.parking`); `EnrichLogic` is what both joins share.

Kept apart from the join rules so those stay free of Bytewax and the clock.
Outputs leave as one list per call, so the runtime moves one item per shard
per batch instead of one per event.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import chain
from typing import Any

from bytewax.operators import StatefulBatchLogic

from operators.as_of import new_join
from operators.enrichment import EnrichConfig, Output, Pending, ShardEnricher, Tally
from operators.parking import JoinState, Message, Parcels, ParkingJoin, Segment
from operators.records import Event, RefUpdate

Clock = Callable[[], float]
Observer = Callable[[Tally], None]
Emitted = tuple[list[list[Output]], bool]


Snapshot = Sequence[bytes | Pending]
"""A shard's waiting events: encoded now; `Pending` in snapshots of earlier versions."""


class EnrichLogic(StatefulBatchLogic[list[Event | RefUpdate], list[Output], Snapshot]):
    """Feeds batches, notifications and end of input to one shard's enricher."""

    def __init__(self, enricher: ShardEnricher, clock: Clock, observe: Observer) -> None:
        self._enricher = enricher
        self._clock = clock
        self._observe = observe
        self._report()

    def on_batch(self, values: list[list[Event | RefUpdate]]) -> Emitted:
        return self._emit(self._enricher.process(chain.from_iterable(values), self._clock()))

    def on_notify(self) -> Emitted:
        return self._emit(self._enricher.expire(self._clock()))

    def on_eof(self) -> Emitted:
        return self._emit(self._enricher.flush(self._clock()))

    def notify_at(self) -> datetime | None:
        deadline = self._enricher.next_deadline()
        return None if deadline is None else datetime.fromtimestamp(deadline, UTC)

    def snapshot(self) -> list[bytes]:
        return self._enricher.snapshot()

    def _emit(self, out: list[Output]) -> Emitted:
        self._report()
        return ([out] if out else []), StatefulBatchLogic.RETAIN

    def _report(self) -> None:
        self._observe(self._enricher.tally)
        self._enricher.tally = Tally()


class JoinLogic(EnrichLogic):
    """A shard's parking join: outputs go on as one list, messages to segments as `Parcels`."""

    def __init__(self, join: ParkingJoin, clock: Clock, observe: Observer) -> None:
        super().__init__(join, clock, observe)
        self._join = join

    def _emit(self, out: list[Output]) -> Emitted:
        self._report()
        emitted: list[Any] = [out] if out else []
        parcels = self._join.take_parcels()
        if parcels:
            emitted.append(Parcels(parcels))
        return emitted, StatefulBatchLogic.RETAIN


class SegmentLogic(StatefulBatchLogic[list[Message], list[Output], list[bytes]]):
    """One segment of parked events; dropped once its last event left."""

    def __init__(self, segment: Segment, clock: Clock, observe: Observer) -> None:
        self._segment = segment
        self._clock = clock
        self._observe = observe

    def on_batch(self, values: list[list[Message]]) -> Emitted:
        return self._emit(self._segment.take(chain.from_iterable(values), self._clock()))

    def on_notify(self) -> Emitted:
        return self._emit(self._segment.expire(self._clock()))

    def on_eof(self) -> Emitted:
        return self._emit(self._segment.flush(self._clock()))

    def notify_at(self) -> datetime | None:
        deadline = self._segment.next_deadline()
        return None if deadline is None else datetime.fromtimestamp(deadline, UTC)

    def snapshot(self) -> list[bytes]:
        return self._segment.snapshot()

    def _emit(self, out: list[Output]) -> Emitted:
        tally = self._segment.tally
        tally.pending_delta = 0  # the join counts its waiting events
        self._observe(tally)
        self._segment.tally = Tally()
        done = StatefulBatchLogic.DISCARD if self._segment.empty else StatefulBatchLogic.RETAIN
        return ([out] if out else []), done


def join_builder(
    config: EnrichConfig, clock: Clock, observe: Observer
) -> Callable[[JoinState | Snapshot | None], JoinLogic]:
    """A shard's join, fresh or resumed; a snapshot of an earlier version holds waiting events."""

    def build(resume: JoinState | Snapshot | None) -> JoinLogic:
        return JoinLogic(new_join(config, resume), clock, observe)

    return build


def segment_builder(
    config: EnrichConfig, clock: Clock, observe: Observer
) -> Callable[[list[bytes] | None], SegmentLogic]:
    """A segment of parked events, fresh (its first `Park`) or resumed."""

    def build(resume: list[bytes] | None) -> SegmentLogic:
        return SegmentLogic(Segment(config, resume), clock, observe)

    return build
