"""Bytewax adapter around `ShardEnricher`: one logic per shard key.

Kept apart from the join rules so those stay free of Bytewax and the clock.
Outputs leave as one list per call, so the runtime moves one item per shard
per batch instead of one per event.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import chain

from bytewax.operators import StatefulBatchLogic

from operators.enrichment import EnrichConfig, Output, Pending, ShardEnricher, Tally
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


def builder(
    config: EnrichConfig, clock: Clock, observe: Observer
) -> Callable[[Snapshot | None], EnrichLogic]:
    """The `stateful_batch` builder: a fresh or resumed logic per shard.

    A resume may come from a snapshot of an earlier version, which held `Pending`.
    """

    def build(resume: Snapshot | None) -> EnrichLogic:
        return EnrichLogic(ShardEnricher(config, resume), clock, observe)

    return build
