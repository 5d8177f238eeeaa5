"""The as-of join: each event joins the reference version valid at its own time.

Kafka Streams' versioned stores, Flink's temporal join and Quix Streams'
`join_asof` do the same. Each key keeps a bounded history
(`operators.history.Versions`); like the latest rows, histories are never
snapshotted but rebuilt from the reference topic on every start, whose
`min.compaction.lag.ms` keeps the versions the window needs.

An event whose key has no version valid at its time waits, as in the latest
mode, until one arrives or its timeout; an event older than the history its
key still keeps leaves at once as `before_history`, since no version that
could join it is kept any more. Waiting events sit in segments
(`operators.parking`); the join also books each one's event time, so that
when a version arrives it knows how many leave and the segments, given the
same versions, pick the same ones (`history.row_at`).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import Any

from operators import waiting as compact
from operators.enrichment import EnrichConfig, Item, Output
from operators.history import Row, Versions, row_at
from operators.parking import JoinState, ParkingJoin, Release, ToSegment
from operators.records import Event, Joined, MissReason, RefUpdate, Status

_new = tuple.__new__
_UNKNOWN = object()
"""The event time of an event parked other than by `_wait`: read from its encoding."""
Newest = tuple[float, Row | None, list[float], list[Row | None]]
"""A key's newest validity time and row, and its history's lists (the same objects)."""
Times = dict[str, dict[int, list[float | None]]]
"""Per lookup id, per segment, the event times of its waiting events in arrival order."""


class AsOfJoin(ParkingJoin):
    """A shard's join in `as_of` mode."""

    def __init__(
        self, config: EnrichConfig, resume: JoinState | Sequence[Any] | None = None
    ) -> None:
        super().__init__(config, resume)
        self.history: dict[str, Versions] = {}
        self.newest: dict[str, Newest] = {}
        """Each key's newest validity time and row, and its history's two lists, flat:
        most events are newer than the newest version, and the others bisect the lists
        without going through the `Versions` object (docs/BENCHMARKS.md, "As-of lookups")."""
        self.times: Times = self._extra.get("times", {})
        self._parking: float | object | None = _UNKNOWN
        self.deleted: dict[str, float] = {}
        """Keys whose newest version is a tombstone, with its time, oldest first: dropped
        whole once it is older than `history_seconds` before the newest time seen."""
        self._newest_seen = -math.inf

    def _lookup_all(self, items: Iterable[Item], now: float, out: list[Output]) -> None:
        emit = out.append
        get = self.newest.get
        enriched = Status.ENRICHED
        hits = 0
        for item in items:
            if type(item) is Event:
                entry = get(item.lookup_id)
                if entry is not None:
                    when = item.event_time
                    if when is None or when >= entry[0]:
                        row = entry[1]
                    else:
                        # `Versions.at`, inlined: two Python frames were half its cost.
                        index = bisect_right(entry[2], when) - 1
                        row = entry[3][index] if index >= 0 else None
                    if row is not None:
                        emit(_new(Joined, (item, row, row[-1], enriched, None, 0.0)))
                        hits += 1
                        continue
                self._wait(item, now, out)
            elif type(item) is RefUpdate:
                self._apply(item, now, out)
            else:
                self._marker(item, now, out)
        self.tally.hits += hits

    def _no_wait(self, event: Event) -> MissReason | None:
        reason = super()._no_wait(event)
        if reason is not None or event.event_time is None:
            return reason
        versions = self.history.get(event.lookup_id)
        if versions is not None and versions.before_history(event.event_time):
            return MissReason.BEFORE_HISTORY
        return None

    def _wait(
        self, event: Event, now: float, out: list[Output], arrived: float | None = None
    ) -> None:
        self._parking = event.event_time
        super()._wait(event, now, out, arrived)

    def _park(self, blob: bytes, lookup_id: str, segment: int, out: list[Output]) -> None:
        whens = self.times.setdefault(lookup_id, {}).setdefault(segment, [])
        when, self._parking = self._parking, _UNKNOWN
        if when is _UNKNOWN:  # not parked by `_wait`: resumed from an older snapshot
            when = compact.decode(blob)[0].event_time
        whens.append(when)  # type: ignore[arg-type]
        super()._park(blob, lookup_id, segment, out)

    def _forget(self, lookup_id: str, segment: int, count: int) -> None:
        """The oldest `count` events of the key in `segment` left (the key's bound)."""
        super()._forget(lookup_id, segment, count)
        self._keep_times(lookup_id, segment, self.times[lookup_id][segment][count:])

    def _drop_segment(self, segment: int) -> None:
        super()._drop_segment(segment)
        for lookup_id in [key for key, segments in self.times.items() if segment in segments]:
            self._keep_times(lookup_id, segment, [])

    def _keep_times(self, lookup_id: str, segment: int, staying: list[float | None]) -> None:
        """Only `staying` of the key's events in `segment` still wait."""
        segments = self.times[lookup_id]
        if staying:
            segments[segment] = staying
        else:
            del segments[segment]
            if not segments:
                del self.times[lookup_id]

    def _apply(self, update: RefUpdate, now: float, out: list[Output]) -> None:
        key = update.lookup_id
        tally = self.tally
        versions = self.history.get(key)
        row = None if update.row is None else (*update.row, update.version)
        valid_from = update.valid_from
        if valid_from is None:
            if row is not None:
                valid_from = -math.inf  # decode gives every row a time; this is defensive
            elif versions is None:
                tally.absent_deletes += 1
                return
            else:
                # A tombstone without a time: nothing says since when, so the key is gone.
                del self.history[key]
                del self.newest[key]
                self.deleted.pop(key, None)
                tally.deleted += 1
                tally.rows_delta -= 1
                return
        known = versions is not None
        if versions is None:
            # A tombstone is kept too: an older version may still arrive after it.
            versions = self.history[key] = Versions()
            tally.rows_delta += 1
        if not versions.put(valid_from, row):
            tally.stale += 1
            return
        if row is not None:
            tally.applied += 1
        elif known:
            tally.deleted += 1
        else:
            tally.absent_deletes += 1
        tally.versions_dropped += versions.prune(
            self.config.history_seconds, self.config.history_versions
        )
        times, rows = versions.times, versions.rows
        newest = self.newest[key] = (times[-1], rows[-1], times, rows)
        if self.config.row_ttl_seconds is not None and valid_from >= newest[0]:
            # Only the key's newest version refreshes it (or, a tombstone, ends its TTL):
            # an older one arriving late changes neither.
            self._refresh(update, self._record_clock(now))
        self.deleted.pop(key, None)
        if newest[1] is None:
            self.deleted[key] = newest[0]
        if valid_from > self._newest_seen:
            self._newest_seen = valid_from
            self._drop_deleted(valid_from - self.config.history_seconds)
        if row is not None and not update.replay and key in self.times:
            self._release_versions(key, versions, now, update.at)

    def _drop_deleted(self, horizon: float) -> None:
        """Forget the keys deleted before `horizon`: no version they kept is within the
        history window any more, so keeping them would only grow with every key deleted."""
        deleted = self.deleted
        while deleted:
            key = next(iter(deleted))
            if deleted[key] >= horizon:
                return
            del deleted[key]
            self._forget_row(key)
            self.tally.rows_delta -= 1

    def _forget_row(self, key: str) -> None:
        del self.history[key]
        del self.newest[key]
        self.deleted.pop(key, None)

    def _row_for(self, event: Event) -> tuple[Any, ...] | None:
        versions = self.history.get(event.lookup_id)
        if versions is None:
            return None
        return versions.at(math.inf if event.event_time is None else event.event_time)

    def _release_current(self, key: str, now: float, out: list[Output]) -> None:
        versions = self.history.get(key)
        if versions is not None and key in self.times:
            self._release_versions(key, versions, now, None)

    def _release_versions(self, key: str, versions: Versions, now: float, at: float | None) -> None:
        """Send the key's versions to each segment where some waiting event of the key now
        has a valid one; count those out of the book."""
        frozen = versions.frozen()
        at = at if self.watermark is not None else None
        for segment, whens in list(self.times[key].items()):
            staying = [when for when in whens if row_at(*frozen, when) is None]
            leaving = len(whens) - len(staying)
            if not leaving:
                continue
            self.parcels.append(ToSegment(segment, Release(key, None, at, frozen)))
            ParkingJoin._forget(self, key, segment, leaving)
            self._keep_times(key, segment, staying)

    def flush(self, now: float) -> list[Output]:
        out = super().flush(now)
        self.times.clear()
        return out

    def _extra_state(self) -> dict[str, Any]:
        return {**super()._extra_state(), "times": self.times}


def new_join(config: EnrichConfig, resume: JoinState | Sequence[Any] | None = None) -> ParkingJoin:
    """The join a lookup's mode asks for."""
    if config.mode == "as_of":
        return AsOfJoin(config, resume)
    return ParkingJoin(config, resume)
