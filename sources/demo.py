"""The built-in demo data set and a Bytewax source that serves it.

The plan is one stream of security reference rows and quote events that holds
every awkward case a real feed produces: late rows, updates, stale updates,
deletes and re-publishes, unknown ids, malformed bytes and duplicates. It is
generated from a seed, so a run can be checked against `DemoPlan.truth`.

Every record goes to partition `crc32(lookup id) % partitions`, so all records
of one security sit in one partition in their planned order; records without a
usable id go by the crc32 of their event index. Bytewax may spread partitions
over any number of workers and interleave them however it likes, but the join
only depends on per-key order, so results are the same for any worker count.

Each security row names its exchange (`exchange_id`, a MIC), so a chain of
lookups can go on from a quote's security to its exchange; the exchanges table
is served by a partition of its own, which says when it is done with
`CaughtUp`, as a reference topic does.
"""

from __future__ import annotations

import gc
import json
import random
import string
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import NamedTuple

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from operators import routing
from operators.records import CaughtUp, Kind, RawRecord

Planned = tuple[Kind, bytes | None, bytes | None]
"""A planned record: kind, key and value, as a Kafka consumer would see them."""
Row = tuple[str, str, str, str]
"""A security's cusip, name, sector and exchange MIC."""


class Exchange(NamedTuple):
    name: str
    country: str
    """ISO 3166 alpha-2 code."""


EXCHANGES: Mapping[str, Exchange] = MappingProxyType(
    {
        "XNYS": Exchange("New York Stock Exchange", "US"),
        "XNAS": Exchange("Nasdaq", "US"),
        "XLON": Exchange("London Stock Exchange", "GB"),
        "XPAR": Exchange("Euronext Paris", "FR"),
        "XETR": Exchange("Xetra", "DE"),
        "XTKS": Exchange("Tokyo Stock Exchange", "JP"),
        "XHKG": Exchange("Hong Kong Exchanges", "HK"),
        "XTSE": Exchange("Toronto Stock Exchange", "CA"),
        "XASX": Exchange("ASX", "AU"),
        "XSWX": Exchange("SIX Swiss Exchange", "CH"),
        "XAMS": Exchange("Euronext Amsterdam", "NL"),
        "XMIL": Exchange("Borsa Italiana", "IT"),
    }
)
"""The demo's exchanges table, keyed by MIC."""
TABLES = ("securities", "exchanges")
"""The demo's reference tables; a `DemoSource` maps each one it serves to a lookup."""
DEFAULT_TABLES: Mapping[str, str] = MappingProxyType({"securities": "security"})
EXCHANGES_PART = "exchanges"
"""The partition that serves the exchanges table, next to the numbered ones."""

SECTORS = (
    "Communication Services",
    "Consumer Discretionary",
    "Consumer Staples",
    "Energy",
    "Financials",
    "Health Care",
    "Industrials",
    "Information Technology",
    "Materials",
    "Real Estate",
    "Utilities",
)
MALFORMED_EVENT_KINDS = (
    "invalid_json",
    "invalid_utf8",
    "missing_security_id",
    "null_security_id",
    "wrong_type_price",
    "oversized",
)
MALFORMED_REFERENCE_KINDS = ("invalid_json", "non_numeric_version")
OVERSIZED_BYTES = 70_000
"""Above the 64 KiB default record limit, so the decoder must refuse it."""

_NAME_HEADS = (
    "Atlas", "Blue Ridge", "Cobalt", "Crescent", "Evergreen", "Granite", "Harbor", "Keystone",
    "Liberty", "Meridian", "Northern", "Orion", "Pacific", "Pioneer", "Silver", "Summit",
)  # fmt: skip
_NAME_TAILS = (
    "Capital", "Energy", "Foods", "Holdings", "Industries", "Labs", "Materials", "Motors",
    "Networks", "Partners", "Realty", "Systems", "Therapeutics", "Utilities",
)  # fmt: skip
_ID_LESS = frozenset({"missing_security_id", "null_security_id"})
_NAME_FORMS = ("Inc", "Corp", "Ltd", "plc", "Group", "Co")
_CUSIP_CHARS = string.digits + string.ascii_uppercase
_CUSIP_VALUES = {char: value for value, char in enumerate(_CUSIP_CHARS)}
_QUOTE = b'{"event_id": "Q%07d", "security_id": "%s", "price": %.2f, "size": %d, "ts": %.3f}'
_QUOTE_WITHOUT_ID = b'{"security_id": "%s", "price": %.2f, "size": %d, "ts": %.3f}'
_EPOCH = 1_700_000_000.0
_QUOTE_SPACING = 0.001
"""Seconds of event time between consecutive quotes."""
FIRST_VALID = _EPOCH - 86_400.0
"""From when the first version of every security row is valid: a day before the quotes."""
BEFORE_QUOTES = _EPOCH - 1.0
"""The record time of the rows published before the first quote."""
_LATE_GAP = (200, 4_000)
_DUPLICATE_GAP = (10, 2_000)
_OVERSIZED_COUNT = 3
_MALFORMED_REFERENCE_COUNT = 6
_NEVER_EXISTING_IDS = 50
_EVENTS_PER_NEVER_EXISTING = 5
_PACE_TICK = 0.05
"""Seconds of events a paced batch holds: short enough that pacing looks smooth."""
_MICS = tuple(EXCHANGES)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


_EXCHANGE_RECORDS: tuple[Planned, ...] = tuple(
    (
        Kind.REFERENCE,
        mic.encode(),
        json.dumps({**exchange._asdict(), "version": 1, "valid_from": _iso(FIRST_VALID)}).encode(),
    )
    for mic, exchange in EXCHANGES.items()
)


@dataclass(frozen=True)
class DemoConfig:
    """Size and speed of the demo; `rate` is events per second over all partitions."""

    events: int = 200_000
    references: int = 10_000
    seed: int = 42
    partitions: int = 4
    batch_size: int = 1000
    rate: float = 0.0

    def __post_init__(self) -> None:
        if self.events < 0 or self.references < 1:
            raise ValueError("the demo needs events >= 0 and references >= 1")
        if self.partitions < 1 or self.batch_size < 1 or self.rate < 0:
            raise ValueError("the demo needs partitions >= 1, batch_size >= 1 and rate >= 0")


@dataclass(frozen=True)
class DemoTruth:
    """What the plan injected, so a test can hold a run's output against it.

    Event counts are of distinct planned events (duplicates are counted only in
    `duplicate_events`); good events are the ones that decode, whether or not
    their security exists. `events_before_row` are good events of late ids that
    precede their row; `events_after_delete` are good events of deleted ids
    between the tombstone and the re-publish (or the end of the stream).
    """

    records: int
    reference_records: int
    event_records: int
    good_events: int
    missing_event_id: int
    never_existing_events: int
    events_before_row: int
    events_after_delete: int
    duplicate_events: int
    malformed_events: dict[str, int]
    malformed_references: dict[str, int]
    late_ids: frozenset[str]
    updated_ids: frozenset[str]
    stale_ids: frozenset[str]
    deleted_ids: frozenset[str]
    republished_ids: frozenset[str]
    never_existing_ids: frozenset[str]
    duplicate_event_ids: frozenset[str]
    history_id: str | None = None
    """The security whose sector changes at `history_change_time`; its second version
    is published before any quote, so only an as-of lookup keeps the first sector for
    the quotes before the change."""
    history_change_time: float = 0.0
    history_sectors: tuple[str, str] = ("", "")

    @property
    def malformed(self) -> int:
        return sum(self.malformed_events.values()) + sum(self.malformed_references.values())


@dataclass(frozen=True)
class DemoPlan:
    """Each partition's records in order; tuples because one plan serves every partition."""

    partitions: tuple[tuple[Planned, ...], ...]
    truth: DemoTruth
    times: tuple[tuple[float, ...], ...] = ()
    """Each record's time, as a Kafka record's timestamp: a quote's own time; a row's,
    the time of the quote it precedes (or `BEFORE_QUOTES`)."""


def security_id(index: int) -> str:
    return f"SEC{index + 1:06d}"


def partition_of(lookup_id: str, partitions: int) -> int:
    return zlib.crc32(lookup_id.encode()) % partitions


def exchange_of(security: str) -> str:
    """The MIC in the row of `security`, the same in every version of the row.

    Derived from the id rather than drawn from the planner's random stream, so
    every other planned number stays what the seed made it. The crc's high
    half is used because `partition_of` takes its low bits: with those, every
    security of an exchange would sit in one partition.
    """
    return _MICS[(zlib.crc32(security.encode()) >> 16) % len(_MICS)]


@lru_cache(maxsize=4)
def build_plan(cfg: DemoConfig) -> DemoPlan:
    """The plan for `cfg`; cached because every partition of a run needs it.

    The garbage collector is paused meanwhile: the plan is a few hundred
    thousand acyclic tuples, and the collections their allocation triggers
    would rescan the whole heap each time, which triples the planning time in
    a process that already holds a large heap (a test run, say).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _Planner(cfg).plan()
    finally:
        if enabled:
            gc.enable()


def _cusip(rng: random.Random) -> str:
    """A CUSIP with a valid check digit, so it looks right to anyone who checks."""
    body = rng.choices(_CUSIP_CHARS, k=8)
    total = 0
    for position, char in enumerate(body):
        value = _CUSIP_VALUES[char] * (2 if position % 2 else 1)
        total += value // 10 + value % 10
    return f"{''.join(body)}{(10 - total % 10) % 10}"


def _name(rng: random.Random) -> str:
    return f"{rng.choice(_NAME_HEADS)} {rng.choice(_NAME_TAILS)} {rng.choice(_NAME_FORMS)}"


def slot_time(slot: int) -> float:
    """The event time of the quote in event slot `slot`."""
    return _EPOCH + slot * _QUOTE_SPACING


def _row_json(row: Row, version: int | str, valid_from: float = FIRST_VALID) -> bytes:
    cusip, name, sector, exchange = row
    return json.dumps(
        {
            "cusip": cusip,
            "name": name,
            "sector": sector,
            "exchange_id": exchange,
            "version": version,
            "valid_from": _iso(valid_from),
        }
    ).encode()


def _malformed_event(kind: str, fields: dict[str, object]) -> bytes:
    """Break a well-formed event in the way `kind` names."""
    if kind == "missing_security_id":
        del fields["security_id"]
    elif kind == "null_security_id":
        fields["security_id"] = None
    elif kind == "wrong_type_price":
        fields["price"] = "abc"
    elif kind == "oversized":
        fields["padding"] = "x" * OVERSIZED_BYTES
    value = json.dumps(fields).encode()
    if kind == "invalid_json":
        return value[:-1]
    if kind == "invalid_utf8":
        return value[:-1] + b', "venue": "\xc3\x28"}'
    return value


@dataclass
class _Slots:
    """What each event slot holds; a slot is one position in the planned event order."""

    owners: list[int]
    """The security index of each slot; indices past the references never exist."""
    malformed: dict[int, str]
    never: list[int]
    no_event_id: set[int]
    duplicated: list[int]


class _Planner:
    """Builds one plan; the order of `rng` calls is part of what a seed means."""

    def __init__(self, cfg: DemoConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        n = cfg.events
        never = min(_NEVER_EXISTING_IDS, max(1, n // 4_000)) if n else 0
        self.ids = [security_id(i) for i in range(cfg.references + never)]
        self.keys = [sid.encode() for sid in self.ids]
        self.parts = [partition_of(sid, cfg.partitions) for sid in self.ids]
        rng = self.rng
        self.rows = [
            (_cusip(rng), _name(rng), rng.choice(SECTORS), exchange_of(sid))
            for sid in self.ids[: cfg.references]
        ]
        self.bases = [rng.uniform(5.0, 500.0) for _ in self.ids]
        """Each security's typical price, so its quotes stay near one level."""
        self.inserts: dict[int, list[tuple[int, Planned]]] = {}
        """Records to emit just before event slot i (slot `events` is the end), by partition."""

    def insert(self, slot: int, security: int, value: bytes | None, kind: Kind) -> None:
        record = (kind, self.keys[security], value)
        self.inserts.setdefault(slot, []).append((self.parts[security], record))

    def plan(self) -> DemoPlan:
        cfg, rng, ids, rows = self.cfg, self.rng, self.ids, self.rows
        n, r = cfg.events, cfg.references
        slots = self._slots()
        slots_of: list[list[int]] = [[] for _ in range(r)]
        for slot, owner in enumerate(slots.owners):
            if owner < r and slot not in slots.malformed:
                slots_of[owner].append(slot)
        late, deleted, updated, bad_rows, changed = self._choose_securities(slots_of)

        late_at = {s: min(n, slots_of[s][0] + rng.randint(*_LATE_GAP)) for s in late}
        for s, at in late_at.items():
            self.insert(at, s, _row_json(rows[s], 1), Kind.REFERENCE)
        stale = self._plan_updates(updated)
        republished, events_after_delete = self._plan_deletes(deleted, slots_of)
        malformed_rows = self._plan_bad_rows(bad_rows)
        history = self._plan_history(changed, slots_of)
        events = self._event_records(slots)
        for slot in slots.duplicated:
            at = min(n, slot + rng.randint(*_DUPLICATE_GAP))
            self.inserts.setdefault(at, []).append(events[slot])

        streams: list[list[Planned]] = [[] for _ in range(cfg.partitions)]
        times: list[list[float]] = [[] for _ in range(cfg.partitions)]
        late_set = set(late)
        for s, row in enumerate(rows):
            if s not in late_set:
                streams[self.parts[s]].append((Kind.REFERENCE, self.keys[s], _row_json(row, 1)))
                times[self.parts[s]].append(BEFORE_QUOTES)
        appenders = [stream.append for stream in streams]
        timers = [stream.append for stream in times]
        inserts = self.inserts
        for slot, (part, record) in enumerate(events):
            when = _EPOCH + slot * _QUOTE_SPACING
            if slot in inserts:
                for inserted_part, inserted in inserts[slot]:
                    appenders[inserted_part](inserted)
                    timers[inserted_part](when)
            appenders[part](record)
            timers[part](when)
        for inserted_part, inserted in inserts.get(n, ()):
            appenders[inserted_part](inserted)
            timers[inserted_part](slot_time(n))

        records = sum(len(stream) for stream in streams)
        event_records = n + len(slots.duplicated)
        truth = DemoTruth(
            records=records,
            reference_records=records - event_records,
            event_records=event_records,
            good_events=n - len(slots.malformed),
            missing_event_id=len(slots.no_event_id),
            never_existing_events=len(slots.never),
            events_before_row=sum(
                sum(1 for slot in slots_of[s] if slot < at) for s, at in late_at.items()
            ),
            events_after_delete=events_after_delete,
            duplicate_events=len(slots.duplicated),
            malformed_events=dict(Counter(slots.malformed.values())),
            malformed_references=malformed_rows,
            late_ids=frozenset(ids[s] for s in late),
            updated_ids=frozenset(ids[s] for s in updated),
            stale_ids=frozenset(ids[s] for s in stale),
            deleted_ids=frozenset(ids[s] for s in deleted),
            republished_ids=frozenset(ids[s] for s in republished),
            never_existing_ids=frozenset(ids[r:]),
            duplicate_event_ids=frozenset(f"Q{slot + 1:07d}" for slot in slots.duplicated),
            history_id=history[0],
            history_change_time=history[1],
            history_sectors=history[2],
        )
        return DemoPlan(
            tuple(tuple(stream) for stream in streams),
            truth,
            tuple(tuple(stream) for stream in times),
        )

    def _slots(self) -> _Slots:
        """Owners of the event slots and which slots carry an injected fault.

        The faulty slots are disjoint, so each planned event has at most one fault.
        """
        rng = self.rng
        n, r = self.cfg.events, self.cfg.references
        never_count = len(self.ids) - r
        owners = rng.choices(range(r), k=n)
        quotas = (
            min(n // 10, max(len(MALFORMED_EVENT_KINDS) + 2, round(n * 0.001))),
            never_count * _EVENTS_PER_NEVER_EXISTING,
            max(1, round(n * 0.0015)) if n else 0,
            max(1, round(n * 0.005)) if n else 0,
        )
        picked = rng.sample(range(n), min(n, sum(quotas)))
        groups: list[list[int]] = []
        for quota in quotas:
            groups.append(picked[:quota])
            picked = picked[quota:]
        malformed_slots, never, no_event_id, duplicated = groups
        cycle = MALFORMED_EVENT_KINDS[:-1]
        malformed = {
            slot: "oversized" if k < _OVERSIZED_COUNT else cycle[k % len(cycle)]
            for k, slot in enumerate(malformed_slots)
        }
        for k, slot in enumerate(never):
            owners[slot] = r + k % never_count
        return _Slots(owners, malformed, never, set(no_event_id), duplicated)

    def _choose_securities(
        self, slots_of: Sequence[list[int]]
    ) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
        """Disjoint late, deleted, updated, malformed-row and changing-sector securities.

        A late row needs an event to be late for, and a delete needs events on
        both sides, so securities without enough events are passed over.
        """
        r = len(slots_of)
        order = list(range(r))
        self.rng.shuffle(order)
        taken: set[int] = set()
        chosen: list[list[int]] = []
        for count, min_events in (
            (round(r * 0.10), 1),
            (max(1, round(r * 0.01)), 2),
            (round(r * 0.05), 0),
            (_MALFORMED_REFERENCE_COUNT, 0),
            (1, 2),
        ):
            group = [s for s in order if s not in taken and len(slots_of[s]) >= min_events]
            chosen.append(group[:count])
            taken.update(group[:count])
        late, deleted, updated, bad_rows, changed = chosen
        return late, deleted, updated, bad_rows, changed

    def _plan_history(
        self, changed: Sequence[int], slots_of: Sequence[list[int]]
    ) -> tuple[str | None, float, tuple[str, str]]:
        """A sector change at the time of the middle quote of the security, published
        before its first quote: version 2, valid from that time."""
        if not changed:
            return None, 0.0, ("", "")
        (s,) = changed
        slots = slots_of[s]
        at = slot_time(slots[len(slots) // 2])
        cusip, name, sector, exchange = self.rows[s]
        new_sector = SECTORS[(SECTORS.index(sector) + 1) % len(SECTORS)]
        self.insert(0, s, _row_json((cusip, name, new_sector, exchange), 2, at), Kind.REFERENCE)
        return self.ids[s], at, (sector, new_sector)

    def _plan_updates(self, updated: Sequence[int]) -> set[int]:
        """Version 2 of each updated row; a few get version 1 again afterwards."""
        rng, n, rows = self.rng, self.cfg.events, self.rows
        stale = set(rng.sample(updated, max(1, round(len(updated) * 0.02)) if updated else 0))
        for s in updated:
            cusip, name, sector, exchange = rows[s]
            if rng.random() < 0.5:
                name = _name(rng)
            else:
                sector = rng.choice([other for other in SECTORS if other != sector])
            at = rng.randint(0, n)
            self.insert(
                at, s, _row_json((cusip, name, sector, exchange), 2, slot_time(at)), Kind.REFERENCE
            )
            if s in stale:
                self.insert(rng.randint(at, n), s, _row_json(rows[s], 1), Kind.REFERENCE)
        return stale

    def _plan_deletes(
        self, deleted: Sequence[int], slots_of: Sequence[list[int]]
    ) -> tuple[set[int], int]:
        """A tombstone between two events of each row; a third come back as version 2.

        Returns the re-published securities and how many good events fall
        between a tombstone and its row's return.
        """
        rng, n, rows = self.rng, self.cfg.events, self.rows
        republished = set(rng.sample(deleted, (len(deleted) + 2) // 3))
        orphaned = 0
        for s in deleted:
            slots = slots_of[s]
            j = rng.randint(1, len(slots) - 1)
            self.insert(rng.randint(slots[j - 1] + 1, slots[j]), s, None, Kind.REFERENCE)
            back_at = n + 1
            if s in republished:
                back_at = rng.randint(slots[j] + 1, n)
                self.insert(back_at, s, _row_json(rows[s], 2, slot_time(back_at)), Kind.REFERENCE)
            orphaned += sum(1 for slot in slots[j:] if slot < back_at)
        return republished, orphaned

    def _plan_bad_rows(self, bad_rows: Sequence[int]) -> dict[str, int]:
        """Malformed re-publishes of rows that stay valid, so only a dead letter results."""
        rows = self.rows
        counts: Counter[str] = Counter()
        for k, s in enumerate(bad_rows):
            kind = MALFORMED_REFERENCE_KINDS[k % len(MALFORMED_REFERENCE_KINDS)]
            counts[kind] += 1
            value = (
                _row_json(rows[s], 2)[:-12] if kind == "invalid_json" else _row_json(rows[s], "two")
            )
            self.insert(self.rng.randint(0, self.cfg.events), s, value, Kind.REFERENCE)
        return dict(counts)

    def _event_records(self, slots: _Slots) -> list[tuple[int, Planned]]:
        """Each slot's event with its partition; bulk-formatted, then faults patched in."""
        rand = self.rng.random
        owners, keys, parts = slots.owners, self.keys, self.parts
        prices = [self.bases[o] * (0.98 + 0.04 * rand()) for o in owners]
        sizes = [(int(rand() * 50) + 1) * 100 for _ in owners]
        values = [
            _QUOTE % (slot + 1, keys[owner], price, size, _EPOCH + slot * _QUOTE_SPACING)
            for slot, (owner, price, size) in enumerate(zip(owners, prices, sizes, strict=True))
        ]
        for slot in slots.no_event_id:
            values[slot] = _QUOTE_WITHOUT_ID % (
                keys[owners[slot]],
                prices[slot],
                sizes[slot],
                _EPOCH + slot * _QUOTE_SPACING,
            )
        event = Kind.EVENT
        records: list[tuple[int, tuple[Kind, bytes | None, bytes | None]]] = [
            (parts[o], (event, keys[o], v)) for o, v in zip(owners, values, strict=True)
        ]
        for slot, kind in slots.malformed.items():
            fields: dict[str, object] = {
                "event_id": f"Q{slot + 1:07d}",
                "security_id": self.ids[owners[slot]],
                "price": round(prices[slot], 2),
                "size": sizes[slot],
                "ts": round(_EPOCH + slot * _QUOTE_SPACING, 3),
            }
            value = _malformed_event(kind, fields)
            if kind in _ID_LESS:
                part = zlib.crc32(str(slot).encode()) % self.cfg.partitions
                records[slot] = (part, (event, None, value))
            else:
                records[slot] = (parts[owners[slot]], (event, keys[owners[slot]], value))
        return records


class DemoPartition(StatefulSourcePartition[RawRecord | CaughtUp, int]):
    """Serves one planned partition; the snapshot is the index of the next unread record.

    On resume it first re-emits the reference records before that index with
    `replay=True`, because the join keeps no rows in its snapshots. Reference
    records carry `lookup`. A `caught_up` marker follows the last record on
    every start, replayed or not, since the join waits for it after a restart
    too.
    """

    def __init__(
        self,
        records: Sequence[Planned],
        name: str,
        start: int,
        batch_size: int,
        rate: float,
        lookup: str,
        caught_up: CaughtUp | None = None,
        times: Sequence[float] = (),
    ) -> None:
        self._records = records
        self._times = times
        self._name = name
        self._lookup = lookup
        self._caught_up = caught_up
        self._next = start
        self._replay = [
            i for i in range(min(start, len(records))) if records[i][0] is Kind.REFERENCE
        ]
        self._replayed = 0
        self._batch_size = batch_size
        self._rate = rate
        self._awake: datetime | None = None

    def _raw(self, index: int, replay: bool = False) -> RawRecord:
        kind, key, value = self._records[index]
        lookup = self._lookup if kind is Kind.REFERENCE else ""
        origin = f"demo/{kind}/{self._name}/{index}"
        when = self._times[index] if self._times else BEFORE_QUOTES
        return RawRecord(kind, key, value, origin, replay, lookup, when)

    def next_batch(self) -> list[RawRecord | CaughtUp]:
        records = self._records
        if self._replayed < len(self._replay):
            chosen = self._replay[self._replayed : self._replayed + self._batch_size]
            self._replayed += len(chosen)
            return [self._raw(i, replay=True) for i in chosen]
        start = self._next
        if start >= len(records):
            if self._caught_up is None:
                raise StopIteration
            caught_up, self._caught_up = self._caught_up, None
            return [caught_up]
        end = min(len(records), start + self._batch_size)
        if self._rate > 0:
            end, events = self._paced_end(start, end)
            now = datetime.now(UTC)
            base = now if self._awake is None else max(self._awake, now)
            self._awake = base + timedelta(seconds=events / self._rate)
        self._next = end
        return [self._raw(i) for i in range(start, end)]

    def _paced_end(self, start: int, end: int) -> tuple[int, int]:
        """Cut the batch after one tick's worth of events, so bursts stay small."""
        quota = max(1, int(self._rate * _PACE_TICK))
        events = 0
        records = self._records
        for i in range(start, end):
            if records[i][0] is Kind.EVENT:
                if events == quota:
                    return i, events
                events += 1
        return end, events

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._next


class DemoSource(FixedPartitionedSource[RawRecord | CaughtUp, int]):
    """The demo plan as a partitioned, resumable source.

    `tables` maps each demo table served to the lookup that reads it. The
    securities are interleaved with the events, so they are always served;
    the exchanges get a partition of their own when asked for.
    """

    def __init__(
        self, cfg: DemoConfig | None = None, tables: Mapping[str, str] = DEFAULT_TABLES
    ) -> None:
        unknown = sorted(set(tables) - set(TABLES))
        if unknown:
            raise ValueError(f"unknown demo tables {unknown}: the demo has {list(TABLES)}")
        if "securities" not in tables:
            raise ValueError("the demo needs a lookup for its securities table")
        lookups = list(tables.values())
        if not all(lookups) or len(set(lookups)) < len(lookups):
            raise ValueError(f"each demo table needs a lookup name of its own, got {dict(tables)}")
        self.cfg = cfg or DemoConfig()
        self.tables = dict(tables)
        """A plain copy: a mapping proxy would not pickle."""

    def list_parts(self) -> list[str]:
        parts = routing.names(self.cfg.partitions)
        return [*parts, EXCHANGES_PART] if "exchanges" in self.tables else parts

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> DemoPartition:
        cfg, start = self.cfg, resume_state or 0
        if for_part == EXCHANGES_PART:
            lookup = self.tables["exchanges"]
            caught_up = CaughtUp(f"demo/{EXCHANGES_PART}", 1, lookup)
            return DemoPartition(
                _EXCHANGE_RECORDS, for_part, start, cfg.batch_size, 0.0, lookup, caught_up
            )
        plan = build_plan(cfg)
        return DemoPartition(
            plan.partitions[int(for_part)],
            for_part,
            start,
            cfg.batch_size,
            cfg.rate / cfg.partitions,
            self.tables["securities"],
            times=plan.times[int(for_part)],
        )
