"""The demo source through its public surface: plan, partitions and a real Bytewax run."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from operators.records import CaughtUp, Kind, RawRecord
from sources.demo import (
    BEFORE_QUOTES,
    EXCHANGES,
    MALFORMED_EVENT_KINDS,
    MALFORMED_REFERENCE_KINDS,
    DemoConfig,
    DemoPartition,
    DemoPlan,
    DemoSource,
    Planned,
    build_plan,
    exchange_of,
    partition_of,
)

SMALL = DemoConfig(events=20_000, references=1_000, seed=7, partitions=3, batch_size=500)
BOTH_TABLES = {"securities": "security", "exchanges": "exchange"}
MAX_RECORD_BYTES = 65_536


@pytest.fixture(scope="module")
def default_plan() -> DemoPlan:
    return build_plan(DemoConfig())


def drain(part: DemoPartition, batch_size: int) -> list[RawRecord | CaughtUp]:
    out: list[RawRecord | CaughtUp] = []
    while True:
        try:
            batch = part.next_batch()
        except StopIteration:
            return out
        assert len(batch) <= batch_size
        out.extend(batch)


def parse(value: bytes | None) -> dict[str, Any] | None:
    """The decoded object if the downstream decoder would accept it as a quote."""
    if value is None or len(value) > MAX_RECORD_BYTES:
        return None
    try:
        obj = json.loads(value.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if obj.get("security_id") is None or not isinstance(obj.get("price"), float):
        return None
    return obj


def by_key(records: tuple[Planned, ...]) -> dict[bytes, list[tuple[int, Planned]]]:
    keyed: dict[bytes, list[tuple[int, Planned]]] = defaultdict(list)
    for index, record in enumerate(records):
        if record[1] is not None:
            keyed[record[1]].append((index, record))
    return keyed


def test_same_seed_same_plan_and_other_seed_differs() -> None:
    first = build_plan.__wrapped__(SMALL)
    again = build_plan.__wrapped__(SMALL)
    other = build_plan.__wrapped__(
        DemoConfig(events=20_000, references=1_000, seed=8, partitions=3)
    )
    assert first.partitions == again.partitions
    assert first.truth == again.truth
    assert first.partitions != other.partitions
    assert build_plan(SMALL) is build_plan(SMALL)


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError):
        DemoConfig(partitions=0)
    with pytest.raises(ValueError):
        DemoConfig(rate=-1.0)


def test_injected_cases_in_stated_proportions(default_plan: DemoPlan) -> None:
    truth = default_plan.truth
    cfg = DemoConfig()
    assert truth.records == sum(len(records) for records in default_plan.partitions)
    assert truth.event_records == cfg.events + truth.duplicate_events
    assert 0.08 <= len(truth.late_ids) / cfg.references <= 0.12
    assert 0.04 <= len(truth.updated_ids) / cfg.references <= 0.06
    assert 0.008 <= len(truth.deleted_ids) / cfg.references <= 0.012
    assert 1 <= len(truth.stale_ids) <= 20
    assert truth.stale_ids <= truth.updated_ids
    assert truth.republished_ids and truth.republished_ids < truth.deleted_ids
    assert 40 <= len(truth.never_existing_ids) <= 60
    assert truth.never_existing_events >= len(truth.never_existing_ids)
    assert 0.004 <= truth.duplicate_events / cfg.events <= 0.006
    assert len(truth.duplicate_event_ids) == truth.duplicate_events
    assert 100 <= truth.missing_event_id <= 1_000
    assert 0.0005 <= sum(truth.malformed_events.values()) / cfg.events <= 0.002
    assert set(truth.malformed_events) == set(MALFORMED_EVENT_KINDS)
    assert 1 <= truth.malformed_events["oversized"] <= 5
    assert set(truth.malformed_references) == set(MALFORMED_REFERENCE_KINDS)
    assert truth.malformed == sum(truth.malformed_events.values()) + sum(
        truth.malformed_references.values()
    )
    assert truth.events_before_row > 0
    assert truth.events_after_delete > 0
    disjoint = [truth.late_ids, truth.updated_ids, truth.deleted_ids, truth.never_existing_ids]
    assert sum(map(len, disjoint)) == len(frozenset().union(*disjoint))


def test_records_match_the_truth(default_plan: DemoPlan) -> None:
    truth = default_plan.truth
    events = [r for records in default_plan.partitions for r in records if r[0] is Kind.EVENT]
    parsed = [parse(value) for _, _, value in events]
    good = [obj for obj in parsed if obj is not None]
    assert len(events) == truth.event_records
    assert len(events) - len(good) == sum(truth.malformed_events.values())
    oversized = sum(1 for _, _, value in events if value and len(value) > MAX_RECORD_BYTES)
    assert oversized == truth.malformed_events["oversized"]
    assert sum(1 for obj in good if "event_id" not in obj) == truth.missing_event_id
    repeated = Counter(obj["event_id"] for obj in good if "event_id" in obj)
    assert {event_id for event_id, n in repeated.items() if n > 1} == truth.duplicate_event_ids
    assert set(repeated.values()) == {1, 2}
    copies: dict[str, set[bytes | None]] = defaultdict(set)
    for (_, _, value), obj in zip(events, parsed, strict=True):
        if obj is not None and obj.get("event_id") in truth.duplicate_event_ids:
            copies[obj["event_id"]].add(value)
    assert all(len(values) == 1 for values in copies.values())
    securities = {obj["security_id"] for obj in good}
    assert truth.never_existing_ids <= securities
    references = {
        key.decode()
        for records in default_plan.partitions
        for kind, key, _ in records
        if kind is Kind.REFERENCE and key is not None
    }
    assert not truth.never_existing_ids & references
    assert len(references) == DemoConfig().references


def test_most_rows_come_before_any_event(default_plan: DemoPlan) -> None:
    before = 0
    for records in default_plan.partitions:
        first_event = next(i for i, record in enumerate(records) if record[0] is Kind.EVENT)
        before += first_event
        assert all(record[0] is Kind.REFERENCE for record in records[:first_event])
    assert 0.88 <= before / DemoConfig().references <= 0.92


def test_each_key_lives_in_one_partition(default_plan: DemoPlan) -> None:
    cfg = DemoConfig()
    homes: dict[bytes, set[int]] = defaultdict(set)
    for part, records in enumerate(default_plan.partitions):
        for _, key, _ in records:
            if key is not None:
                homes[key].add(part)
    for key, parts in homes.items():
        assert parts == {partition_of(key.decode(), cfg.partitions)}
    id_less = sum(1 for records in default_plan.partitions for _, key, _ in records if key is None)
    malformed = default_plan.truth.malformed_events
    assert id_less == malformed["missing_security_id"] + malformed["null_security_id"]


def test_late_rows_follow_their_first_events(default_plan: DemoPlan) -> None:
    truth = default_plan.truth
    early: set[bytes | None] = set()
    for records in default_plan.partitions:
        for key, history in by_key(records).items():
            if key.decode() not in truth.late_ids:
                continue
            row_at = next(i for i, r in history if r[0] is Kind.REFERENCE)
            first_event_at = next(i for i, r in history if r[0] is Kind.EVENT)
            assert first_event_at < row_at
            early.update(
                r[2] for i, r in history if r[0] is Kind.EVENT and i < row_at and parse(r[2])
            )
    assert len(early) == truth.events_before_row


def test_deletes_come_before_later_events(default_plan: DemoPlan) -> None:
    truth = default_plan.truth
    seen: set[str] = set()
    orphaned: set[bytes | None] = set()
    for records in default_plan.partitions:
        for key, history in by_key(records).items():
            lookup_id = key.decode()
            tombstones = [i for i, r in history if r[0] is Kind.REFERENCE and r[2] is None]
            if not tombstones:
                continue
            seen.add(lookup_id)
            (deleted_at,) = tombstones
            rows_after = [i for i, r in history if r[0] is Kind.REFERENCE and i > deleted_at]
            back_at = rows_after[0] if rows_after else len(records)
            between = [r[2] for i, r in history if r[0] is Kind.EVENT and deleted_at < i < back_at]
            assert between, lookup_id
            orphaned.update(value for value in between if parse(value))
            assert bool(rows_after) == (lookup_id in truth.republished_ids)
    assert seen == truth.deleted_ids
    assert len(orphaned) == truth.events_after_delete


def test_updates_and_stale_updates(default_plan: DemoPlan) -> None:
    truth = default_plan.truth
    for records in default_plan.partitions:
        for key, history in by_key(records).items():
            lookup_id = key.decode()
            if lookup_id not in truth.updated_ids:
                continue
            rows = [json.loads(r[2]) for _, r in history if r[0] is Kind.REFERENCE]
            assert [row["version"] for row in rows] == (
                [1, 2, 1] if lookup_id in truth.stale_ids else [1, 2]
            )
            first, second = rows[:2]
            assert (first["name"], first["sector"]) != (second["name"], second["sector"])
            assert first["cusip"] == second["cusip"]


def test_every_security_row_names_its_exchange(default_plan: DemoPlan) -> None:
    for records in default_plan.partitions:
        used: set[str] = set()
        for kind, key, value in records:
            if kind is not Kind.REFERENCE or value is None or not value.endswith(b"}"):  # not cut
                continue
            assert key is not None
            row = json.loads(value)
            assert row["exchange_id"] == exchange_of(key.decode())
            used.add(row["exchange_id"])
        assert used == set(EXCHANGES), "every partition holds securities of every exchange"


def test_exchanges_partition_serves_every_row_then_caught_up() -> None:
    source = DemoSource(dataclasses.replace(SMALL, batch_size=5), BOTH_TABLES)
    assert source.list_parts() == ["0", "1", "2", "exchanges"]
    part = source.build_part("demo", "exchanges", None)
    *rows, last = drain(part, 5)
    assert last == CaughtUp("demo/exchanges", 1, "exchange")
    assert all(type(row) is RawRecord for row in rows)
    assert [row.origin for row in rows] == [
        f"demo/reference/exchanges/{i}" for i in range(len(EXCHANGES))
    ]
    assert {(row.kind, row.lookup, row.replay) for row in rows} == {
        (Kind.REFERENCE, "exchange", False)
    }
    assert {row.key: json.loads(row.value) for row in rows} == {
        mic.encode(): {
            "name": exchange.name,
            "country": exchange.country,
            "version": 1,
            "valid_from": "2023-11-13T22:13:20+00:00",
        }
        for mic, exchange in EXCHANGES.items()
    }
    assert {row.timestamp for row in rows} == {BEFORE_QUOTES}
    assert part.snapshot() == len(EXCHANGES)
    with pytest.raises(StopIteration):
        part.next_batch()


@pytest.mark.parametrize("resume_at", [5, len(EXCHANGES)])
def test_exchanges_resume_replays_rows_and_catches_up_again(resume_at: int) -> None:
    source = DemoSource(dataclasses.replace(SMALL, batch_size=5), BOTH_TABLES)
    full = drain(source.build_part("demo", "exchanges", None), 5)
    resumed = drain(source.build_part("demo", "exchanges", resume_at), 5)
    assert resumed == [row._replace(replay=True) for row in full[:resume_at]] + full[resume_at:]
    assert resumed[-1] == CaughtUp("demo/exchanges", 1, "exchange")


def test_securities_carry_the_lookup_they_are_mapped_to() -> None:
    records = drain(DemoSource(SMALL, {"securities": "sec"}).build_part("demo", "1", None), 500)
    assert {(r.kind, r.lookup) for r in records} == {(Kind.EVENT, ""), (Kind.REFERENCE, "sec")}
    assert not any(type(r) is CaughtUp for r in records)
    default = drain(DemoSource(SMALL).build_part("demo", "1", None), 500)
    assert {r.lookup for r in default if r.kind is Kind.REFERENCE} == {"security"}


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"exchanges": "exchange"}, "securities table"),
        ({"securities": "security", "bonds": "bond"}, r"unknown demo tables \['bonds'\]"),
        ({"securities": ""}, "lookup name of its own"),
        ({"securities": "ref", "exchanges": "ref"}, "lookup name of its own"),
    ],
)
def test_bad_table_mapping_is_refused(tables: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DemoSource(SMALL, tables)


def test_resume_replays_references_then_continues() -> None:
    source = DemoSource(SMALL)
    part_name = source.list_parts()[1]
    fresh = source.build_part("demo", part_name, None)
    full = drain(fresh, SMALL.batch_size)
    assert fresh.snapshot() == len(full)

    reader = source.build_part("demo", part_name, None)
    for _ in range(7):
        reader.next_batch()
    resume_at = reader.snapshot()
    assert resume_at == 7 * SMALL.batch_size

    resumed = source.build_part("demo", part_name, resume_at)
    expected_replay = [
        record._replace(replay=True) for record in full[:resume_at] if record.kind is Kind.REFERENCE
    ]
    replayed: list[RawRecord] = []
    while len(replayed) < len(expected_replay):
        batch = resumed.next_batch()
        assert 0 < len(batch) <= SMALL.batch_size
        assert resumed.snapshot() == resume_at
        replayed.extend(batch)
    assert replayed == expected_replay
    assert drain(resumed, SMALL.batch_size) == full[resume_at:]
    assert resumed.snapshot() == len(full)


def test_resume_at_the_end_only_replays() -> None:
    source = DemoSource(SMALL)
    full = drain(source.build_part("demo", "0", None), SMALL.batch_size)
    replayed = drain(source.build_part("demo", "0", len(full)), SMALL.batch_size)
    assert all(record.replay for record in replayed)
    assert len(replayed) == sum(1 for record in full if record.kind is Kind.REFERENCE)


def test_partitions_together_hold_every_record_once() -> None:
    source = DemoSource(SMALL)
    parts = source.list_parts()
    assert parts == ["0", "1", "2"]
    read = [drain(source.build_part("demo", name, None), SMALL.batch_size) for name in parts]
    plan = build_plan(SMALL)
    for name, records, planned in zip(parts, read, plan.partitions, strict=True):
        assert [(r.kind, r.key, r.value) for r in records] == list(planned)
        assert [r.origin for r in records] == [
            f"demo/{r.kind}/{name}/{i}" for i, r in enumerate(records)
        ]
        assert not any(r.replay for r in records)
    origins = [r.origin for records in read for r in records]
    assert len(origins) == len(set(origins)) == plan.truth.records


def test_part_names_are_zero_padded() -> None:
    names = DemoSource(DemoConfig(events=100, references=50, partitions=12)).list_parts()
    assert names[0] == "00"
    assert names[-1] == "11"
    assert len(set(names)) == 12


def test_rate_sets_a_future_awake_time() -> None:
    cfg = DemoConfig(events=5_000, references=200, partitions=2, rate=200.0)
    part = DemoSource(cfg).build_part("demo", "0", None)
    assert part.next_awake() is None
    before = datetime.now(UTC)
    batch = part.next_batch()
    events = sum(1 for record in batch if record.kind is Kind.EVENT)
    assert 1 <= events <= 100
    first_awake = part.next_awake()
    assert first_awake is not None
    assert first_awake > before
    part.next_batch()
    second_awake = part.next_awake()
    assert second_awake is not None
    assert second_awake > first_awake


def test_unpaced_source_never_waits() -> None:
    part = DemoSource(SMALL).build_part("demo", "0", None)
    part.next_batch()
    assert part.next_awake() is None


def test_bytewax_run_yields_every_record_once() -> None:
    cfg = DemoConfig(events=3_000, references=150, seed=3, partitions=3, batch_size=64)
    out: list[RawRecord] = []
    flow = Dataflow("demo_source_test")
    op.output("out", op.input("in", flow, DemoSource(cfg)), TestingSink(out))
    run_main(flow)
    plan = build_plan(cfg)
    assert len(out) == plan.truth.records
    assert len({record.origin for record in out}) == len(out)
    assert Counter((r.kind, r.key, r.value) for r in out) == Counter(
        record for records in plan.partitions for record in records
    )
    assert not any(record.replay for record in out)


def test_bytewax_run_serves_the_exchanges_with_the_plan() -> None:
    cfg = DemoConfig(events=3_000, references=150, seed=3, partitions=3, batch_size=64)
    out: list[RawRecord | CaughtUp] = []
    flow = Dataflow("demo_exchanges_test")
    op.output("out", op.input("in", flow, DemoSource(cfg, BOTH_TABLES)), TestingSink(out))
    run_main(flow)
    caught_up = [item for item in out if type(item) is CaughtUp]
    assert caught_up == [CaughtUp("demo/exchanges", 1, "exchange")]
    exchanges = [r for r in out if type(r) is RawRecord and r.lookup == "exchange"]
    assert sorted(r.key for r in exchanges) == sorted(mic.encode() for mic in EXCHANGES)
    assert len(out) == build_plan(cfg).truth.records + len(EXCHANGES) + 1
