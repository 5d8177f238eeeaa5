"""A join and its segments wired in memory, as the dataflow wires them, for tests and benchmarks.

It has the surface of `ShardEnricher`, so the same property tests drive both.
"""

from __future__ import annotations

import pickle
from typing import Any

from operators import waiting
from operators.as_of import new_join
from operators.enrichment import EnrichConfig, Item, Output, Tally
from operators.parking import Segment, by_segment

SHARD = "s"


class ParkedShard:
    """One shard's join and segments; a segment left empty is dropped, as `DISCARD` does."""

    def __init__(self, config: EnrichConfig, state: Any = None) -> None:
        join_state, segment_states = state or (None, {})
        self.config = config
        self.join = new_join(config, join_state)
        self.segments = {key: Segment(config, blobs) for key, blobs in segment_states.items()}
        self.tally = Tally()

    def _route(self, out: list[Any], now: float) -> list[Output]:
        parcels = self.join.take_parcels()
        result: list[Output] = list(out)
        for key, messages in by_segment(SHARD, parcels):
            segment = self.segments.get(key) or Segment(self.config)
            result.extend(segment.take(messages, now))
            self._keep(key, segment)
        return result

    def _keep(self, key: str, segment: Segment) -> None:
        self.tally.inner_excluded += segment.tally.inner_excluded
        segment.tally = Tally()
        if segment.empty:
            self.segments.pop(key, None)
        else:
            self.segments[key] = segment

    def _harvest(self) -> None:
        self.tally.inner_excluded += self.join.tally.inner_excluded
        self.join.tally = Tally()

    def process(self, items: list[Item], now: float) -> list[Output]:
        out = self._route(self.join.process(items, now), now)
        self._harvest()
        return out

    def expire(self, now: float) -> list[Output]:
        out = self._route(self.join.expire(now), now)
        for key, segment in list(self.segments.items()):
            out.extend(segment.expire(now))
            self._keep(key, segment)
        self._harvest()
        return out

    def flush(self, now: float) -> list[Output]:
        out = self._route(self.join.flush(now), now)
        for key, segment in list(self.segments.items()):
            out.extend(segment.flush(now))
            self._keep(key, segment)
        self._harvest()
        return out

    def snapshot(self) -> Any:
        """Through pickle, as Bytewax stores it."""
        state = (self.join.snapshot(), {k: s.snapshot() for k, s in self.segments.items()})
        return pickle.loads(pickle.dumps(state))

    @property
    def rows(self) -> dict[str, tuple[Any, ...]]:
        return self.join.rows

    @property
    def pending(self) -> dict[str, list[bytes]]:
        """Every event still waiting in a segment, by lookup id."""
        merged: dict[str, list[bytes]] = {}
        for segment in self.segments.values():
            for key, queue in segment.pending.items():
                merged.setdefault(key, []).extend(queue)
        return merged

    @property
    def pending_count(self) -> int:
        return sum(segment.pending_count for segment in self.segments.values())

    def waiting_bytes(self) -> int:
        return sum(waiting.size(blob) for queue in self.pending.values() for blob in queue)
