"""The whole dataflow, run for real, held against what the demo plan's bytes imply.

Demo runs use a miss timeout far beyond the run, so only end of input releases
a waiting event and every outcome follows from per-key order in the plan. The
expected outcome is worked out here from the planned bytes with `json`, never
with the project's decoder or join, and is cross-checked with `DemoPlan.truth`.
Clock-driven rules (timeout, late arrival within the timeout) and overflow get
small hand-made streams; the entry point runs as a subprocess.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import TestingSource, run_main
from prometheus_client.registry import REGISTRY

from config.lookups import DEMO_LOOKUPS
from dataflows.flow import build_flow, demo_source, sources
from dataflows.settings import Settings, load_settings
from operators.filters import Condition
from operators.records import Kind, RawRecord
from sources.demo import EXCHANGES, DemoTruth, build_plan, exchange_of

ROOT = Path(__file__).resolve().parents[1]
EVENTS = 20_000
REFERENCES = 2_000
SEED = 46
"""A seed whose duplicates include copies with different outcomes, so the upsert's
last-write-wins is visible (in seed 42 every duplicate's copies agree)."""
LONG_TIMEOUT = 3_600.0
"""Far beyond any run, so no wall-clock timeout can change a demo run's result."""
DEMO = {"demo_events": EVENTS, "demo_references": REFERENCES, "demo_seed": SEED}
MAX_RECORD_BYTES = 65_536
REFERENCE_COLUMNS = ("cusip", "name", "sector")
NO_ROW: tuple[None, None, None] = (None, None, None)
SECURITY_ONLY = [DEMO_LOOKUPS[0]]
"""For hand-made streams, which carry no exchange rows."""
SUBPROCESS_TIMEOUT = 60.0

Row = dict[str, Any]
RefRow = tuple[Any, ...]


@dataclass(frozen=True)
class Copy:
    """One planned event record that must decode; duplicates are several copies of one id."""

    origin: str
    event_id: str
    lookup_id: str
    index: int
    """Position in its partition; every record of one lookup id shares a partition."""
    fields: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """What the join must emit for one copy."""

    status: str
    miss_reason: str | None
    version: int | None
    row: RefRow


@dataclass(frozen=True)
class RefRecord:
    """A valid planned reference record; `row` is None for a tombstone."""

    index: int
    version: int | None
    row: RefRow | None


@dataclass(frozen=True)
class Expected:
    """The plan worked out from its bytes: what decodes, what fails and what the join emits."""

    copies: list[Copy]
    emitted: list[tuple[Copy, Outcome]]
    """Every copy's outcome in emission order, so the last one per id is what an upsert keeps."""
    dead: dict[str, tuple[str, bytes | None, bytes | None]]
    """Origin of each malformed record → (reason, key, value)."""
    refs: dict[str, list[RefRecord]]
    event_records: int

    def final(self, keep_misses: bool = True) -> dict[str, tuple[Copy, Outcome]]:
        """Per event id, the last outcome the table keeps (misses skipped when they leave it)."""
        kept: dict[str, tuple[Copy, Outcome]] = {}
        for copy, outcome in self.emitted:
            if keep_misses or outcome.status != "lookup_miss":
                kept[copy.event_id] = (copy, outcome)
        return kept

    def miss_copies(self) -> list[Copy]:
        return [copy for copy, outcome in self.emitted if outcome.status == "lookup_miss"]

    def by_id(self) -> dict[str, list[Copy]]:
        grouped: dict[str, list[Copy]] = defaultdict(list)
        for copy in self.copies:
            grouped[copy.event_id].append(copy)
        return grouped


def event_problem(value: bytes | None) -> str | None:
    """The dead-letter reason a planned event must get, or None when it is valid."""
    if value is None:
        return "tombstone"
    if not value:
        return "empty_value"
    if len(value) > MAX_RECORD_BYTES:
        return "oversized"
    try:
        obj = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError:
        return "invalid_utf8"
    except json.JSONDecodeError:
        return "invalid_json"
    if obj.get("security_id") is None:
        return "missing_lookup_id"
    if not isinstance(obj.get("price"), int | float) or not isinstance(obj.get("size"), int):
        return "invalid_field"
    return None


def reference_problem(value: bytes) -> str | None:
    try:
        obj = json.loads(value.decode("utf-8"))
    except json.JSONDecodeError:
        return "invalid_json"
    if not isinstance(obj.get("version"), int | float):
        return "invalid_field"
    return None


def work_out(settings: Settings) -> Expected:
    """Replay each partition of the run's plan in order with the documented join rules."""
    source = demo_source(settings)
    plan, part_names = build_plan(source.cfg), source.list_parts()
    copies: list[Copy] = []
    emitted: list[tuple[Copy, Outcome]] = []
    dead: dict[str, tuple[str, bytes | None, bytes | None]] = {}
    refs: dict[str, list[RefRecord]] = defaultdict(list)
    event_records = 0
    # The exchanges partition, listed last, holds no event: every exchange exists.
    for name, records in zip(part_names, plan.partitions, strict=False):
        held: dict[str, tuple[int, RefRow]] = {}
        waiting: dict[str, list[Copy]] = defaultdict(list)
        for index, (kind, key, value) in enumerate(records):
            origin = f"demo/{kind.value}/{name}/{index}"
            if kind is Kind.EVENT:
                event_records += 1
                problem = event_problem(value)
                if problem is not None:
                    dead[origin] = (problem, key, value)
                    continue
                assert value is not None
                obj = json.loads(value)
                event_id = origin if obj.get("event_id") is None else str(obj["event_id"])
                copy = Copy(origin, event_id, str(obj["security_id"]), index, obj)
                copies.append(copy)
                if copy.lookup_id in held:
                    version, row = held[copy.lookup_id]
                    emitted.append((copy, Outcome("enriched", None, version, row)))
                else:
                    waiting[copy.lookup_id].append(copy)
                continue
            assert key is not None
            lookup_id = key.decode()
            if value is None:
                refs[lookup_id].append(RefRecord(index, None, None))
                held.pop(lookup_id, None)
                continue
            problem = reference_problem(value)
            if problem is not None:
                dead[origin] = (problem, key, value)
                continue
            obj = json.loads(value)
            version, row = obj["version"], tuple(obj[column] for column in REFERENCE_COLUMNS)
            refs[lookup_id].append(RefRecord(index, version, row))
            if lookup_id in held and version <= held[lookup_id][0]:
                continue
            held[lookup_id] = (version, row)
            for copy in waiting.pop(lookup_id, []):
                emitted.append((copy, Outcome("late_enriched", None, version, row)))
        for queue in waiting.values():
            for copy in queue:
                emitted.append((copy, Outcome("lookup_miss", "end_of_input", None, NO_ROW)))
    return Expected(copies, emitted, dead, dict(refs), event_records)


def demo_settings(work: Path, **overrides: Any) -> Settings:
    return load_settings(
        **{
            **DEMO,
            "miss_timeout_seconds": LONG_TIMEOUT,
            "sqlite_path": work / "enriched.sqlite",
            "dead_letter_path": work / "dead_letters.jsonl",
            **overrides,
        }
    )


def read_table(path: Path) -> dict[str, Row]:
    """Rows by event id; fails if an event id is stored twice (it is the primary key)."""
    with closing(sqlite3.connect(path)) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(row) for row in conn.execute("SELECT * FROM enriched_events")]
    table = {row["event_id"]: row for row in rows}
    assert len(table) == len(rows)
    return table


def _bytes(text: str | None, encoding: str) -> bytes | None:
    if encoding == "none":
        return None
    assert text is not None
    return base64.b64decode(text) if encoding == "base64" else text.encode("utf-8")


def read_dead_letters(path: Path) -> list[dict[str, Any]]:
    """Dead-letter lines with payload and key turned back into the original bytes."""
    letters = []
    for line in path.read_text(encoding="utf-8").splitlines():
        letter = json.loads(line)
        letter["payload"] = _bytes(letter["payload"], letter["payload_encoding"])
        letter["key"] = _bytes(letter["key"], letter["key_encoding"])
        letters.append(letter)
    return letters


def run_demo(work: Path, **overrides: Any) -> tuple[dict[str, Row], list[dict[str, Any]]]:
    settings = demo_settings(work, **overrides)
    run_main(build_flow(settings))
    return read_table(settings.sqlite_path), read_dead_letters(settings.dead_letter_path)


def references(row: Row) -> RefRow:
    return tuple(row[column] for column in REFERENCE_COLUMNS)


def stages(row: Row) -> list[dict[str, Any]]:
    return json.loads(row["stages"])


def with_security(**changes: Any) -> list[Any]:
    """The demo chain with the security lookup changed as asked."""
    return [DEMO_LOOKUPS[0].model_copy(update=changes), *DEMO_LOOKUPS[1:]]


@pytest.fixture(scope="module", autouse=True)
def clean_environment() -> Iterator[None]:
    """Settings read `ENRICH_*` variables; a developer's shell must not change these runs."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(("ENRICH_", "BYTEWAX_")):
                patch.delenv(name)
        yield


@pytest.fixture(scope="module")
def truth() -> DemoTruth:
    return build_plan(demo_source(load_settings(**DEMO)).cfg).truth


@pytest.fixture(scope="module")
def expected() -> Expected:
    return work_out(load_settings(**DEMO))


@pytest.fixture(scope="module")
def default_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, Row], list[dict[str, Any]]]:
    """One run with default policies, shared by the tests that only read its output."""
    return run_demo(tmp_path_factory.mktemp("default"))


def test_worked_out_plan_agrees_with_truth(expected: Expected, truth: DemoTruth) -> None:
    """The oracle below is only as good as its reading of the plan; tie it to `truth` first."""
    by_reason: Counter[str] = Counter()
    kind_reason = {
        "missing_security_id": "missing_lookup_id",
        "null_security_id": "missing_lookup_id",
        "wrong_type_price": "invalid_field",
        "non_numeric_version": "invalid_field",
    }
    for kind, count in [*truth.malformed_events.items(), *truth.malformed_references.items()]:
        by_reason[kind_reason.get(kind, kind)] += count
    assert Counter(reason for reason, _, _ in expected.dead.values()) == by_reason
    assert expected.event_records == truth.event_records
    assert len(expected.by_id()) == truth.good_events
    assert len(expected.copies) == truth.good_events + truth.duplicate_events
    duplicated = {eid for eid, copies in expected.by_id().items() if len(copies) > 1}
    assert duplicated == truth.duplicate_event_ids
    assert sum(eid.startswith("demo/") for eid in expected.by_id()) == truth.missing_event_id


def test_every_event_is_stored_once_or_dead_lettered_once(
    default_run: tuple[dict[str, Row], list[dict[str, Any]]], expected: Expected
) -> None:
    """Duplicates collapse to one row, bad records keep their bytes, and nothing goes missing."""
    table, letters = default_run
    by_id = expected.by_id()
    assert set(table) == set(by_id)
    for event_id, row in table.items():
        fields = by_id[event_id][-1].fields
        assert row["lookup_id"] == fields["security_id"]
        assert (row["price"], row["size"], row["event_time"]) == (
            fields["price"],
            fields["size"],
            fields["ts"],
        )

    origins = Counter(letter["origin"] for letter in letters)
    assert all(count == 1 for count in origins.values()), origins.most_common(3)
    found = {item["origin"]: (item["reason"], item["key"], item["payload"]) for item in letters}
    assert found == expected.dead

    planned_events = expected.event_records
    stored_copies = sum(len(copies) for event_id, copies in by_id.items() if event_id in table)
    dead_events = sum(1 for origin in found if origin.startswith("demo/event/"))
    assert stored_copies + dead_events == planned_events


def test_statuses_and_reference_values_follow_the_plan(
    default_run: tuple[dict[str, Row], list[dict[str, Any]]], expected: Expected
) -> None:
    """Every row holds exactly the status, version and row per-key order implies.

    When copies of one event id come out differently (the first waits for a late
    row, the second hits it), the row holds the later one: the upsert overwrites.
    """
    table, _ = default_run
    wrong = []
    for event_id, (_, outcome) in expected.final().items():
        row = table[event_id]
        got = (row["status"], row["miss_reason"], row["ref_version"], references(row))
        if got != (outcome.status, outcome.miss_reason, outcome.version, outcome.row):
            wrong.append((event_id, got, outcome))
        security = stages(row)[0]
        assert (security["lookup"], security["status"]) == ("security", outcome.status)
        if row["status"] == "enriched":
            assert security["waited_ms"] == 0.0
        assert row["waited_ms"] >= security["waited_ms"] >= 0.0
    assert not wrong, f"{len(wrong)} rows differ, first ones: {wrong[:5]}"
    outcomes: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    for copy, outcome in expected.emitted:
        outcomes[copy.event_id].add((outcome.status, outcome.version))
    assert any(len(seen) > 1 for seen in outcomes.values()), "no duplicate whose copies differ"
    statuses = Counter(row["status"] for row in table.values())
    assert set(statuses) == {"enriched", "late_enriched", "lookup_miss"}


def test_the_second_lookup_adds_each_security_s_exchange(
    default_run: tuple[dict[str, Row], list[dict[str, Any]]], expected: Expected
) -> None:
    """Stage two keys on the `exchange_id` stage one brought; a stage-one miss has no key."""
    table, _ = default_run
    hits = misses = 0
    for event_id, (copy, outcome) in expected.final().items():
        row = table[event_id]
        exchange = (row["exchange_id"], row["exchange_name"], row["exchange_country"])
        second = stages(row)[1]
        if outcome.status == "lookup_miss":
            misses += 1
            assert exchange == (None, None, None)
            assert (second["status"], second["miss_reason"]) == ("lookup_miss", "missing_key")
            continue
        hits += 1
        mic = exchange_of(copy.lookup_id)
        assert exchange == (mic, *EXCHANGES[mic])
        assert (second["lookup"], second["status"], second["version"]) == (
            "exchange",
            "enriched",
            1,
        )
    assert hits > 0 and misses > 0


def test_events_before_a_late_row_wait_for_it(
    default_run: tuple[dict[str, Row], list[dict[str, Any]]],
    expected: Expected,
    truth: DemoTruth,
) -> None:
    """A quote that precedes its security's first row is held, then enriched as late."""
    table, _ = default_run
    before_row = 0
    for event_id, copies in expected.by_id().items():
        lookup_id = copies[0].lookup_id
        if lookup_id not in truth.late_ids:
            continue
        first_row = expected.refs[lookup_id][0]
        assert first_row.version == 1
        before_row += copies[0].index < first_row.index
        row = table[event_id]
        if copies[-1].index < first_row.index:
            assert row["status"] == "late_enriched", row
            assert row["waited_ms"] >= 0.0
            assert (row["ref_version"], references(row)) == (1, first_row.row)
        else:
            assert row["status"] == "enriched", row
    assert before_row == truth.events_before_row > 0


def test_never_existing_ids_miss_with_empty_defaults(
    default_run: tuple[dict[str, Row], list[dict[str, Any]]], truth: DemoTruth
) -> None:
    """No row ever comes, so end of input releases them under the empty `defaults` policy."""
    table, _ = default_run
    rows = [row for row in table.values() if row["lookup_id"] in truth.never_existing_ids]
    assert len(rows) == truth.never_existing_events > 0
    for row in rows:
        assert (row["status"], row["miss_reason"]) == ("lookup_miss", "end_of_input")
        assert row["ref_version"] is None
        assert references(row) == NO_ROW


def test_updates_apply_from_their_position_and_stale_versions_never_win(
    default_run: tuple[dict[str, Row], list[dict[str, Any]]],
    expected: Expected,
    truth: DemoTruth,
) -> None:
    """Quotes before an update keep version 1, later ones get version 2; a late v1 is ignored."""
    table, _ = default_run
    versions: Counter[float] = Counter()
    after_stale = 0
    for copies in expected.by_id().values():
        lookup_id = copies[-1].lookup_id
        if lookup_id not in truth.updated_ids:
            continue
        rows = expected.refs[lookup_id]
        old, new = rows[0], next(ref for ref in rows if ref.version == 2)
        assert old.version == 1 and old.row != new.row
        stale = [ref for ref in rows if ref.index > new.index and ref.version == 1]
        assert bool(stale) == (lookup_id in truth.stale_ids)
        row = table[copies[-1].event_id]
        assert row["status"] == "enriched"
        if copies[-1].index < new.index:
            expected_version = (1, old.row)
        else:
            expected_version = (2, new.row)
            assert references(row) != old.row
        after_stale += bool(stale) and copies[-1].index > stale[0].index
        assert (row["ref_version"], references(row)) == expected_version
        versions[row["ref_version"]] += 1
    assert versions[1] > 0 and versions[2] > 0
    assert after_stale > 0, "no quote follows a stale update, so the check above proved nothing"


def test_deleted_ids_miss_until_republished(
    default_run: tuple[dict[str, Row], list[dict[str, Any]]],
    expected: Expected,
    truth: DemoTruth,
) -> None:
    """After a tombstone quotes wait again: to a miss, or to the re-published version 2."""
    table, _ = default_run
    in_gap = 0
    republished: set[str] = set()
    for event_id, copies in expected.by_id().items():
        lookup_id = copies[0].lookup_id
        if lookup_id not in truth.deleted_ids:
            continue
        rows = expected.refs[lookup_id]
        tombstone = next(ref for ref in rows if ref.row is None)
        back = next((ref for ref in rows if ref.index > tombstone.index and ref.row), None)
        back_at = len(expected.copies) * 10 if back is None else back.index
        if back is not None:
            republished.add(lookup_id)
        in_gap += tombstone.index < copies[0].index < back_at
        row = table[event_id]
        last = copies[-1].index
        if last < tombstone.index:
            assert (row["status"], row["ref_version"]) == ("enriched", 1)
        elif last < back_at and back is None:
            assert (row["status"], row["miss_reason"]) == ("lookup_miss", "end_of_input")
            assert references(row) == NO_ROW
        else:
            assert back is not None
            status = "late_enriched" if last < back_at else "enriched"
            assert (row["status"], row["ref_version"], references(row)) == (status, 2, back.row)
    assert republished == truth.republished_ids
    assert in_gap == truth.events_after_delete > 0


def test_miss_defaults_fill_their_columns(tmp_path: Path, expected: Expected) -> None:
    """Under `defaults` a miss carries the configured values and NULL for the other columns."""
    table, _ = run_demo(tmp_path, lookups=with_security(miss_defaults={"sector": "UNKNOWN"}))
    misses = {eid for eid, (_, out) in expected.final().items() if out.status == "lookup_miss"}
    assert misses
    assert {eid for eid, row in table.items() if row["status"] == "lookup_miss"} == misses
    for event_id, row in table.items():
        if event_id in misses:
            assert references(row) == (None, None, "UNKNOWN")
        else:
            assert row["sector"] != "UNKNOWN"


def test_dead_letter_policy_moves_misses_out_of_the_table(
    tmp_path: Path, expected: Expected
) -> None:
    """Each missing copy becomes a `lookup_miss` dead letter with its fields; none is a row."""
    table, letters = run_demo(tmp_path, miss_policy="dead_letter")
    assert set(table) == set(expected.final(keep_misses=False))
    assert "lookup_miss" not in {row["status"] for row in table.values()}
    misses = {copy.origin: copy for copy in expected.miss_copies()}
    found = {letter["origin"]: letter for letter in letters if letter["reason"] == "lookup_miss"}
    assert misses and set(found) == set(misses)
    for origin, letter in found.items():
        assert json.loads(letter["payload"]) == misses[origin].fields
        assert letter["key"] == misses[origin].lookup_id.encode()
    assert len(letters) == len(found) + len(expected.dead)


def test_pass_through_policy_keeps_misses_without_reference_values(
    tmp_path: Path, expected: Expected
) -> None:
    """`pass_through` writes the miss with every reference column NULL, ignoring defaults."""
    table, _ = run_demo(
        tmp_path,
        miss_policy="pass_through",
        lookups=with_security(miss_defaults={"sector": "UNKNOWN"}),
    )
    final = expected.final()
    assert set(table) == set(final)
    misses = [eid for eid, (_, out) in final.items() if out.status == "lookup_miss"]
    assert misses
    for event_id in misses:
        row = table[event_id]
        assert (row["status"], row["miss_reason"]) == ("lookup_miss", "end_of_input")
        assert (row["ref_version"], references(row)) == (None, NO_ROW)


def test_inner_join_excludes_misses_and_counts_them(tmp_path: Path, expected: Expected) -> None:
    """An inner join keeps misses out of both outputs; the counter says how many it dropped."""
    metric, labels = "enrich_inner_join_excluded_total", {"lookup": "security"}
    before = REGISTRY.get_sample_value(metric, labels) or 0.0
    table, letters = run_demo(tmp_path, join_type="inner")
    after = REGISTRY.get_sample_value(metric, labels) or 0.0
    assert "lookup_miss" not in {row["status"] for row in table.values()}
    assert set(table) == set(expected.final(keep_misses=False))
    assert not [letter for letter in letters if letter["reason"] == "lookup_miss"]
    assert after - before == len(expected.miss_copies()) > 0


def event(event_id: str, lookup_id: str, offset: int) -> RawRecord:
    value = json.dumps({"event_id": event_id, "security_id": lookup_id}).encode()
    return RawRecord(Kind.EVENT, lookup_id.encode(), value, f"test/event/0/{offset}")


def reference(lookup_id: str, offset: int, name: str) -> RawRecord:
    value = json.dumps({"cusip": "C0", "name": name, "sector": "S", "version": 1}).encode()
    origin = f"test/reference/0/{offset}"
    return RawRecord(Kind.REFERENCE, lookup_id.encode(), value, origin, lookup="security")


def run_records(tmp_path: Path, items: list[Any], **overrides: Any) -> dict[str, Row]:
    """Run the real flow on a hand-made stream, one record per batch, into a real table."""
    settings = load_settings(
        **{
            "sqlite_path": tmp_path / "enriched.sqlite",
            "dead_letter_path": tmp_path / "dead_letters.jsonl",
            "lookups": SECURITY_ONLY,
            **overrides,
        }
    )
    run_main(build_flow(settings, {"input": TestingSource(items)}))
    assert read_dead_letters(settings.dead_letter_path) == []
    return read_table(settings.sqlite_path)


def test_timeout_fires_on_the_system_clock_while_input_is_quiet(tmp_path: Path) -> None:
    """The input pauses longer than the timeout, so only a clock notification can release E1."""
    pause = 0.8
    items = [
        event("E1", "A", 0),
        TestingSource.PAUSE(timedelta(seconds=pause)),
        reference("A", 1, "Alpha"),
        event("E2", "A", 2),
    ]
    table = run_records(tmp_path, items, miss_timeout_seconds=0.2, timeout_clock="processing")
    first, second = table["E1"], table["E2"]
    assert (first["status"], first["miss_reason"]) == ("lookup_miss", "timeout")
    assert first["name"] is None
    assert 199.999 <= first["waited_ms"] < pause * 1000
    assert (second["status"], second["ref_version"], second["name"]) == ("enriched", 1, "Alpha")


def test_row_arriving_within_the_timeout_releases_the_waiting_event(tmp_path: Path) -> None:
    """A row that comes after a real wait shorter than the timeout makes the event late."""
    pause = 0.3
    items = [
        event("E1", "A", 0),
        TestingSource.PAUSE(timedelta(seconds=pause)),
        reference("A", 1, "Alpha"),
        event("E2", "A", 2),
    ]
    table = run_records(tmp_path, items, miss_timeout_seconds=30.0)
    first = table["E1"]
    assert (first["status"], first["miss_reason"]) == ("late_enriched", None)
    assert (first["ref_version"], first["name"]) == (1, "Alpha")
    # Measured on the clock: the pause, less a little slack for when the source read it.
    assert (pause - 0.05) * 1000 <= first["waited_ms"] < 30_000
    assert table["E2"]["status"] == "enriched"


def test_full_key_queue_sends_its_oldest_out_as_overflow(tmp_path: Path) -> None:
    """With room for two waiting events per key, each newer arrival pushes the oldest out."""
    items: list[Any] = [event(f"E{i}", "A", i) for i in range(1, 6)]
    items.append(reference("A", 6, "Alpha"))
    table = run_records(tmp_path, items, miss_timeout_seconds=LONG_TIMEOUT, max_pending_per_key=2)
    outcomes = {eid: (row["status"], row["miss_reason"]) for eid, row in table.items()}
    assert outcomes == {
        "E1": ("lookup_miss", "overflow"),
        "E2": ("lookup_miss", "overflow"),
        "E3": ("lookup_miss", "overflow"),
        "E4": ("late_enriched", None),
        "E5": ("late_enriched", None),
    }


def entry_point(tmp_path: Path, **settings: object) -> subprocess.CompletedProcess[str]:
    """`python -m bytewax.run dataflows.enrich` from the project root, installed or not."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENRICH_", "BYTEWAX_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        ENRICH_SQLITE_PATH=str(tmp_path / "enriched.sqlite"),
        ENRICH_DEAD_LETTER_PATH=str(tmp_path / "dead_letters.jsonl"),
    )
    env.update({f"ENRICH_{name.upper()}": str(value) for name, value in settings.items()})
    return subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.enrich"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


def test_bad_setting_stops_start_up_with_the_variable_name(tmp_path: Path) -> None:
    """An operator sees which variable is wrong, not a Python traceback, and nothing runs."""
    result = entry_point(tmp_path, shards="abc")
    assert result.returncode != 0
    assert "ENRICH_SHARDS" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "enriched.sqlite").exists()


def summary_section(text: str, heading: str) -> dict[str, int]:
    """The `label    1,234` lines under one heading of the run summary."""
    section = text.split(heading, 1)[1].split(":\n", 1)[0]
    return {
        label: int(count.replace(",", ""))
        for label, count in re.findall(r"^ {4}(\S.*?) {2,}([\d,]+)$", section, re.MULTILINE)
    }


def test_entry_point_runs_to_the_end_and_prints_a_summary(tmp_path: Path) -> None:
    """The demo ends by itself and its summary counts match the plan and the outputs."""
    sizes = {"demo_events": 5_000, "demo_references": 500}
    result = entry_point(tmp_path, miss_timeout_seconds=LONG_TIMEOUT, **sizes)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3_000:]
    assert "run summary" in output

    settings = load_settings(**sizes)
    truth = build_plan(demo_source(settings).cfg).truth
    worked = work_out(settings)
    statuses = Counter(
        f"{out.status} ({out.miss_reason})" if out.miss_reason else out.status
        for _, out in worked.emitted
    )
    assert summary_section(output, "events out of lookup 'security' by status:") == statuses
    reasons = Counter(reason for reason, _, _ in worked.dead.values())
    event_letters = summary_section(output, "event dead letters by reason:")
    reference_letters = summary_section(output, "reference dead letters by reason:")
    assert Counter(event_letters) + Counter(reference_letters) == reasons
    event_dead = {o for o in worked.dead if "/event/" in o}
    assert sum(event_letters.values()) == len(event_dead)
    # Every event read is accounted for once: out of the last lookup, or an event dead letter.
    last = summary_section(output, "events out of lookup 'exchange' by status:")
    events_read = re.search(r"events read\s+([\d,]+)", output)
    assert events_read
    assert int(events_read[1].replace(",", "")) == sum(last.values()) + sum(event_letters.values())
    letters = read_dead_letters(tmp_path / "dead_letters.jsonl")
    assert Counter(letter["reason"] for letter in letters) == reasons
    assert len(read_table(tmp_path / "enriched.sqlite")) == truth.good_events
    events_read = re.search(r"events read\s+([\d,]+)", output)
    assert events_read and int(events_read[1].replace(",", "")) == truth.event_records


def test_filtered_events_never_reach_a_lookup_and_a_file_feeds_the_second(
    tmp_path: Path,
) -> None:
    """The event filter drops cheap quotes before any state; the exchanges come from a file,
    and a row the lookup's filter rejects behaves as deleted."""
    exchanges = tmp_path / "exchanges.jsonl"
    exchanges.write_text(
        '{"key": "XLON", "value": {"name": "London", "country": "GB", "status": "OPEN"}}\n'
        '{"key": "XTKS", "value": {"name": "Tokyo", "country": "JP", "status": "CLOSED"}}\n'
    )
    exchange = DEMO_LOOKUPS[1].model_validate(
        DEMO_LOOKUPS[1].model_dump()
        | {
            "columns": {**DEMO_LOOKUPS[1].columns, "status": "str"},
            "file": exchanges,
            "filter": [Condition(field="status", op="==", value="OPEN")],
            "miss_policy": "pass_through",
        }
    )
    settings = load_settings(
        sqlite_path=tmp_path / "enriched.sqlite",
        dead_letter_path=tmp_path / "dead_letters.jsonl",
        lookups=[DEMO_LOOKUPS[0], exchange],
        event_filter=[{"field": "price", "op": ">", "value": 100}],
        miss_timeout_seconds=LONG_TIMEOUT,
    )

    def quote(event_id: str, security: str, price: float, offset: int) -> RawRecord:
        value = json.dumps({"event_id": event_id, "security_id": security, "price": price})
        return RawRecord(Kind.EVENT, None, value.encode(), f"test/event/0/{offset}")

    def security(key: str, mic: str, offset: int) -> RawRecord:
        value = json.dumps({"name": key, "exchange_id": mic, "version": 1}).encode()
        origin = f"test/reference/0/{offset}"
        return RawRecord(Kind.REFERENCE, key.encode(), value, origin, lookup="security")

    items = [
        security("S1", "XLON", 0),
        security("S2", "XTKS", 1),
        quote("cheap", "S1", 50.0, 2),
        quote("dear", "S1", 150.0, 3),
        quote("closed", "S2", 150.0, 4),
    ]
    filtered = ("enrich_filtered_total", {"kind": "event"})
    before = REGISTRY.get_sample_value(*filtered) or 0.0
    inputs = {**sources(settings), "input": TestingSource(items)}
    assert set(inputs) == {"input", "reference_file_exchange"}
    run_main(build_flow(settings, inputs))
    table = read_table(settings.sqlite_path)
    assert set(table) == {"dear", "closed"}
    assert (REGISTRY.get_sample_value(*filtered) or 0.0) - before == 1
    dear, closed = table["dear"], table["closed"]
    assert (dear["status"], dear["exchange_name"], dear["exchange_country"]) == (
        "enriched",
        "London",
        "GB",
    )
    assert (closed["status"], closed["miss_reason"], closed["exchange_name"]) == (
        "lookup_miss",
        "end_of_input",
        None,
    )
    assert [s["status"] for s in stages(closed)] == ["enriched", "lookup_miss"]


def test_as_of_keeps_the_sector_valid_at_each_quote(
    default_run: tuple[dict[str, Row], list[dict[str, Any]]], truth: DemoTruth, tmp_path: Path
) -> None:
    """The demo's one sector change, published before its first quote: the latest mode gives
    every quote the new sector, the as-of mode the one valid at the quote's time."""
    assert truth.history_id is not None
    change, (old, new) = truth.history_change_time, truth.history_sectors

    def sectors(table: dict[str, Row]) -> Counter[tuple[bool, str, int]]:
        return Counter(
            (row["event_time"] < change, row["sector"], row["ref_version"])
            for row in table.values()
            if row["lookup_id"] == truth.history_id
        )

    latest, _ = default_run
    before = sum(
        1
        for row in latest.values()
        if row["lookup_id"] == truth.history_id and row["event_time"] < change
    )
    assert before > 0
    assert set(sectors(latest)) == {(True, new, 2), (False, new, 2)}
    as_of, _ = run_demo(
        tmp_path,
        lookups=with_security(mode="as_of", valid_from="field", valid_from_field="valid_from"),
    )
    assert sectors(as_of) == Counter(
        {(True, old, 1): before, (False, new, 2): sectors(latest)[False, new, 2]}
    )
    # Every other quote joins what the latest mode joined: their versions hold from before.
    others = [eid for eid, row in latest.items() if row["lookup_id"] != truth.history_id]
    differ = [eid for eid in others if latest[eid]["sector"] != as_of[eid]["sector"]]
    deleted_between = {eid for eid in differ if latest[eid]["lookup_id"] in truth.deleted_ids}
    assert set(differ) == deleted_between
