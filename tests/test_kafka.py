"""The Kafka path over real sockets, against librdkafka's mock cluster.

Bounded runs stop at the end of the topics (`ENRICH_KAFKA_STOP_AT_END`) and
run in-process; runs that must be killed or fed while they tail run as
`python -m bytewax.run dataflows.enrich` subprocesses. Every run has a miss
timeout far beyond its length, so no wall-clock timeout decides an outcome.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import pytest
from bytewax.testing import cluster_main, run_main
from confluent_kafka import Message
from conftest import MockKafka
from flowrun import ROOT, flow_env, init_recovery, kill_group, resume_point, start_flow, tail

from commands.demo_to_kafka import produce_demo
from config.lookups import DEMO_LOOKUPS, Lookup
from dataflows.flow import build_flow, demo_source
from dataflows.settings import Settings, load_settings
from operators.enrichment import HELD
from sources.demo import EXCHANGES, DemoTruth, build_plan, exchange_of

T = TypeVar("T")
Row = dict[str, Any]

DEAD_LETTERS = "dead-letters"
ENRICHED = "enriched"
WAIT_SECONDS = 120.0
"""How long a live run may take to show an expected row before the test fails."""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("ENRICH_", "BYTEWAX_")):
            monkeypatch.delenv(name)


SECURITY_ONLY = [DEMO_LOOKUPS[0]]
"""One lookup, on the `reference` topic: hand-made scenarios carry no exchange rows."""


def on_topic(topic: str) -> list[Lookup]:
    return [DEMO_LOOKUPS[0].model_copy(update={"topic": topic})]


def kafka_settings(kafka: MockKafka, work: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "source": "kafka",
        "lookups": SECURITY_ONLY,
        "kafka_brokers": kafka.bootstrap,
        "kafka_stop_at_end": True,
        "miss_timeout_seconds": 3600,
        "dead_letter_topic": DEAD_LETTERS,
        "sqlite_path": work / "enriched.sqlite",
        "progress_seconds": 0,
        **overrides,
    }


def run_bounded(kafka: MockKafka, work: Path, **overrides: Any) -> Settings:
    settings = load_settings(**kafka_settings(kafka, work, **overrides))
    run_main(build_flow(settings))
    return settings


def read_table(db: Path) -> dict[str, Row]:
    if not db.exists():
        return {}
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute('SELECT * FROM "enriched_events"').fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return {}
            raise
    return {row["event_id"]: dict(row) for row in rows}


def without_wall_clock(table: dict[str, Row]) -> dict[str, Row]:
    """Rows without the waits and arrival numbers, which are wall-clock time (the waits also
    in each lookup's outcome)."""

    def steady(row: Row) -> Row:
        stages = [
            {k: v for k, v in stage.items() if k != "waited_ms"}
            for stage in json.loads(row["stages"])
        ]
        kept = {k: v for k, v in row.items() if k not in {"waited_ms", "arrival_seq"}}
        return {**kept, "stages": stages}

    return {key: steady(row) for key, row in table.items()}


def header(msg: Message, name: str) -> str:
    return dict(msg.headers() or [])[name].decode()


def event(event_id: str, lookup_id: str) -> tuple[bytes, bytes]:
    return lookup_id.encode(), json.dumps({"event_id": event_id, "security_id": lookup_id}).encode()


def row(lookup_id: str, version: int = 1, name: str | None = None) -> tuple[bytes, bytes]:
    value = {"cusip": f"C-{lookup_id}", "name": name or f"Name {lookup_id}", "sector": "Tech"}
    return lookup_id.encode(), json.dumps({**value, "version": version}).encode()


def wait_for(check: Callable[[], T | None], what: str, proc: Any, work: Path) -> T:
    """Poll a live run until `check` gives a value; fail naming `what` if it never does."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = check()
        if found:
            return found
        assert proc.poll() is None, f"the run ended before {what}:\n{tail(work, 'run.log')}"
        assert time.monotonic() < deadline, f"never saw {what}:\n{tail(work, 'run.log')}"
        time.sleep(0.05)


def has_rows(db: Path, ids: set[str]) -> Callable[[], dict[str, Row] | None]:
    def check() -> dict[str, Row] | None:
        table = read_table(db)
        return table if ids <= table.keys() else None

    return check


def tailing_env(kafka: MockKafka, work: Path, **overrides: Any) -> dict[str, str]:
    return flow_env(work, **kafka_settings(kafka, work, kafka_stop_at_end=False, **overrides))


@pytest.fixture
def live(kafka: MockKafka, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start tailing runs of the real entry point; every one is killed at the end."""
    procs: list[Any] = []

    def start(*args: str, **overrides: Any) -> Any:
        proc = start_flow(tmp_path, args, tailing_env(kafka, tmp_path, **overrides), "run.log")
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        kill_group(proc)


SMALL_DEMO = {"demo_events": 5_000, "demo_references": 500}


def demo_truth(settings: Settings) -> DemoTruth:
    return build_plan(demo_source(settings).cfg).truth


def test_demo_data_set_through_kafka_accounts_for_every_event(
    kafka: MockKafka, tmp_path: Path
) -> None:
    chain = {"lookups": DEMO_LOOKUPS, **SMALL_DEMO}
    settings = load_settings(**kafka_settings(kafka, tmp_path, **chain))
    truth = demo_truth(settings)
    produced = produce_demo(settings)
    assert (produced.events, produced.references) == (
        truth.event_records,
        truth.reference_records + len(EXCHANGES),
    )

    run_bounded(kafka, tmp_path, enriched_topic=ENRICHED, **chain)
    table = read_table(tmp_path / "enriched.sqlite")
    letters = kafka.consume_all(DEAD_LETTERS)
    enriched = kafka.consume_all(ENRICHED)

    assert len(table) == truth.good_events
    assert sum(key.startswith("kafka/events/") for key in table) == truth.missing_event_id
    from_events = [msg for msg in letters if header(msg, "enrich.source.topic") == "events"]
    assert len(from_events) == sum(truth.malformed_events.values())
    assert len(letters) - len(from_events) == sum(truth.malformed_references.values())
    assert len(enriched) == truth.good_events + truth.duplicate_events
    assert {json.loads(msg.value())["enrichment"]["event_id"] for msg in enriched} == set(table)
    # Copies of an event id may reach the topic in either order; the one that arrived
    # last is the table's row, as the upsert's arrival_seq rule keeps it.
    last: dict[str, dict[str, Any]] = {}
    for msg in enriched:
        about = json.loads(msg.value())["enrichment"]
        kept = last.get(about["event_id"])
        if kept is None or about["arrival_seq"] >= kept["arrival_seq"]:
            last[about["event_id"]] = about
    assert {key: (about["status"], about["arrival_seq"]) for key, about in last.items()} == {
        key: (row["status"], row["arrival_seq"]) for key, row in table.items()
    }

    originals = {
        (msg.topic(), msg.partition(), msg.offset()): msg.value()
        for topic in ("events", "reference")
        for msg in kafka.consume_all(topic)
    }
    for letter in letters:
        position = (
            header(letter, "enrich.source.topic"),
            int(header(letter, "enrich.source.partition")),
            int(header(letter, "enrich.source.offset")),
        )
        assert originals[position] == letter.value()

    # Every reference row is read before any event is looked up, so exactly
    # the ids without a row at the end of the topic miss, and nothing is late.
    without_row = truth.never_existing_ids | (truth.deleted_ids - truth.republished_ids)
    for stored in table.values():
        assert stored["status"] in {"enriched", "lookup_miss"}
        assert (stored["status"] == "lookup_miss") == (stored["lookup_id"] in without_row)
        if stored["status"] == "enriched":
            mic = exchange_of(stored["lookup_id"])
            assert (stored["exchange_id"], stored["exchange_country"]) == (
                mic,
                EXCHANGES[mic].country,
            )


BAD_EVENTS: list[tuple[bytes | None, bytes | None, str]] = [
    (b"S1", b'{"security_id": "S1", "price": 1', "invalid_json"),
    (b"S1", b'{"security_id": "S1", "venue": "\xc3\x28"}', "invalid_utf8"),
    (b"S1", b'{"security_id": "S1", "price": "abc"}', "invalid_field"),
    (b"S1", b'{"price": 1.5}', "missing_lookup_id"),
    (b"S1", b'{"security_id": null, "price": 1.5}', "missing_lookup_id"),
    (b"S1", b"", "empty_value"),
    (b"S1", b'{"security_id": "S1", "pad": "' + b"x" * 70_000 + b'"}', "oversized"),
    (b"S1", None, "tombstone"),
    (b"S1", b"[1, 2]", "not_an_object"),
]


def test_bad_events_and_rows_reach_the_dead_letter_topic_and_the_flow_goes_on(
    kafka: MockKafka, tmp_path: Path
) -> None:
    kafka.produce("reference", [row("S1"), (None, b'{"name": "keyless"}')], partition=0)
    kafka.produce("events", [(key, value) for key, value, _ in BAD_EVENTS], partition=0)
    kafka.produce("events", [event("good", "S1")], partition=0)
    run_bounded(kafka, tmp_path)

    letters = kafka.consume_all(DEAD_LETTERS)
    from_events = sorted(
        (msg for msg in letters if header(msg, "enrich.source.topic") == "events"),
        key=lambda msg: int(header(msg, "enrich.source.offset")),
    )
    assert [header(msg, "enrich.reason") for msg in from_events] == [
        reason for _, _, reason in BAD_EVENTS
    ]
    assert [msg.value() for msg in from_events] == [value for _, value, _ in BAD_EVENTS]
    assert all(header(msg, "enrich.detail") for msg in from_events)
    (keyless,) = [msg for msg in letters if header(msg, "enrich.source.topic") == "reference"]
    assert header(keyless, "enrich.reason") == "missing_lookup_id"
    assert keyless.value() == b'{"name": "keyless"}'

    table = read_table(tmp_path / "enriched.sqlite")
    assert list(table) == ["good"]
    assert (table["good"]["status"], table["good"]["name"]) == ("enriched", "Name S1")


def test_a_row_produced_after_its_events_releases_them_late(
    kafka: MockKafka, tmp_path: Path, live: Callable[..., Any]
) -> None:
    db = tmp_path / "enriched.sqlite"
    kafka.produce("reference", [row("S1")], partition=0)
    kafka.produce(
        "events", [event("e1", "S2"), event("e2", "S2"), event("marker", "S1")], partition=0
    )
    proc = live()
    # The marker follows e1 and e2 in their partition: once it is stored, they were looked up.
    wait_for(has_rows(db, {"marker"}), "the marker event", proc, tmp_path)
    assert {"e1", "e2"}.isdisjoint(read_table(db))

    kafka.produce("reference", [row("S2")], partition=1)
    table = wait_for(has_rows(db, {"e1", "e2"}), "the released events", proc, tmp_path)
    for event_id in ("e1", "e2"):
        assert table[event_id]["status"] == "late_enriched"
        assert table[event_id]["name"] == "Name S2"
        assert table[event_id]["waited_ms"] > 0


def test_crash_and_resume_equal_an_uninterrupted_run(
    kafka: MockKafka, tmp_path: Path, live: Callable[..., Any]
) -> None:
    """Killed while e1, e2, e3 and e6 wait for their rows; the rows come while it is down.

    S4 had a row that was deleted before e6 came: re-reading that history on
    resume must not release e6 with the deleted row, nor dead-letter the bad
    reference record a second time.
    """

    def scenario(prefix: str, crash: bool) -> dict[str, Row]:
        work = tmp_path / prefix
        work.mkdir()
        topics = {
            "kafka_events_topic": f"{prefix}-events",
            "lookups": on_topic(f"{prefix}-reference"),
            "sqlite_path": work / "enriched.sqlite",
            "dead_letter_path": work / "dead_letters.jsonl",
            "dead_letter_topic": None,
        }
        db = work / "enriched.sqlite"
        history = [row("S1"), row("S4", 1, "deleted"), (b"S4", None), (b"S9", b"{bad")]
        kafka.produce(f"{prefix}-reference", history, partition=0)
        first = [event(f"e{i}", key) for i, key in ((1, "S2"), (2, "S3"), (3, "S3"), (6, "S4"))]
        first.append(event("e4", "S1"))
        kafka.produce(f"{prefix}-events", first, partition=0)
        recovery = init_recovery(work) if crash else []
        proc = live(*recovery, **topics)
        wait_for(has_rows(db, {"e4"}), "e4", proc, tmp_path)
        if crash:
            waiting = {"e1", "e2", "e3", "e6"}
            wait_for(lambda: resumes_missed(work, waiting), "a snapshot", proc, tmp_path)
            kill_group(proc)
        kafka.produce(f"{prefix}-reference", [row("S3"), row("S2"), row("S4", 2)], partition=1)
        if not crash:
            # e5 must come after S3 here too, not race it across partitions.
            late = {"e1", "e2", "e3", "e6"}
            wait_for(has_rows(db, late), "the late events", proc, tmp_path)
        kafka.produce(f"{prefix}-events", [event("e5", "S3")], partition=0)
        if crash:
            proc = live(*recovery, **topics)
        table = wait_for(has_rows(db, {f"e{i}" for i in range(1, 7)}), "all", proc, tmp_path)
        letters = (work / "dead_letters.jsonl").read_text().splitlines()
        assert [json.loads(line)["reason"] for line in letters] == ["invalid_json"]
        return table

    uninterrupted = scenario("steady", crash=False)
    resumed = scenario("crashed", crash=True)
    assert without_wall_clock(resumed) == without_wall_clock(uninterrupted)
    assert (resumed["e6"]["name"], resumed["e6"]["ref_version"]) == ("Name S4", 2)
    statuses = {key: stored["status"] for key, stored in resumed.items()}
    assert statuses == {
        "e1": "late_enriched",
        "e2": "late_enriched",
        "e3": "late_enriched",
        "e4": "enriched",
        "e5": "enriched",
        "e6": "late_enriched",
    }


def exchange_row(mic: str, country: str) -> tuple[bytes, bytes]:
    return mic.encode(), json.dumps({"name": f"Exchange {mic}", "country": country}).encode()


def test_a_chain_resumed_mid_stream_equals_an_uninterrupted_run(
    kafka: MockKafka, tmp_path: Path, live: Callable[..., Any]
) -> None:
    """Killed while e1 and e2, enriched by the security lookup, wait in the exchange lookup.

    They are snapshotted with the security columns and outcome they already
    have; the exchange row comes while the run is down, and after the resume
    they leave late, with both lookups' values, exactly as without the crash.
    """

    def scenario(prefix: str, crash: bool) -> dict[str, Row]:
        work = tmp_path / prefix
        work.mkdir()
        chain = [
            DEMO_LOOKUPS[0].model_copy(update={"topic": f"{prefix}-securities"}),
            DEMO_LOOKUPS[1].model_copy(update={"topic": f"{prefix}-exchanges"}),
        ]
        topics = {
            "kafka_events_topic": f"{prefix}-events",
            "lookups": chain,
            "sqlite_path": work / "enriched.sqlite",
            "dead_letter_topic": None,
        }
        db = work / "enriched.sqlite"
        securities = [
            (b"S1", json.dumps({"name": "One", "exchange_id": "XLON", "version": 1}).encode()),
            (b"S2", json.dumps({"name": "Two", "exchange_id": "XTKS", "version": 1}).encode()),
        ]
        kafka.produce(f"{prefix}-securities", securities, partition=0)
        kafka.produce(f"{prefix}-exchanges", [exchange_row("XLON", "GB")], partition=0)
        first = [event("e1", "S2"), event("e2", "S2"), event("e3", "S1")]
        kafka.produce(f"{prefix}-events", first, partition=0)
        recovery = init_recovery(work) if crash else []
        proc = live(*recovery, **topics)
        wait_for(has_rows(db, {"e3"}), "e3", proc, tmp_path)
        if crash:
            waiting = {"e1", "e2"}
            wait_for(
                lambda: resumes_waiting_in(work, "exchange", waiting), "a snapshot", proc, tmp_path
            )
            kill_group(proc)
        kafka.produce(f"{prefix}-exchanges", [exchange_row("XTKS", "JP")], partition=1)
        if crash:
            proc = live(*recovery, **topics)
        return wait_for(has_rows(db, {"e1", "e2", "e3"}), "all", proc, tmp_path)

    uninterrupted = scenario("steady", crash=False)
    resumed = scenario("crashed", crash=True)
    assert without_wall_clock(resumed) == without_wall_clock(uninterrupted)
    for event_id in ("e1", "e2"):
        stored = resumed[event_id]
        assert stored["status"] == "late_enriched"
        assert (stored["name"], stored["exchange_id"], stored["exchange_country"]) == (
            "Two",
            "XTKS",
            "JP",
        )
        outcomes = [(s["lookup"], s["status"]) for s in json.loads(stored["stages"])]
        assert outcomes == [("security", "enriched"), ("exchange", "late_enriched")]
    assert resumed["e3"]["status"] == "enriched"


def resumes_waiting_in(work: Path, lookup: str, event_ids: set[str]) -> bool:
    """Whether a resume now would restore `event_ids` as waiting in `lookup`, looked up."""
    pending = resume_point(work / "recovery").pending_by_lookup.get(lookup, [])
    return {p.event.event_id for p in pending if p.deadline != HELD} == event_ids


def resumes_missed(work: Path, event_ids: set[str]) -> bool:
    """Whether a resume now would restore `event_ids` as looked up and missed.

    Until the reference topic has caught up, events are held unlooked-up; a
    kill then would resume them as held, and they would rightly find the rows
    produced while the run was down, unlike the uninterrupted run.
    """
    pending = resume_point(work / "recovery").pending
    return {p.event.event_id for p in pending if p.deadline != HELD} == event_ids


def test_two_workers_on_partitioned_topics_equal_one(kafka: MockKafka, tmp_path: Path) -> None:
    settings = load_settings(**kafka_settings(kafka, tmp_path, **SMALL_DEMO))
    produce_demo(settings)
    one = run_bounded(kafka, tmp_path / "one", **SMALL_DEMO)
    two = load_settings(**kafka_settings(kafka, tmp_path / "two", **SMALL_DEMO))
    cluster_main(build_flow(two), [], 0, worker_count_per_proc=2)
    found = without_wall_clock(read_table(two.sqlite_path))
    assert found == without_wall_clock(read_table(one.sqlite_path))
    assert len(found) == demo_truth(settings).good_events


def test_the_demo_producer_command_fills_the_configured_topics(
    kafka: MockKafka, tmp_path: Path
) -> None:
    chain = [
        DEMO_LOOKUPS[0].model_copy(update={"topic": "securities"}),
        DEMO_LOOKUPS[1].model_copy(update={"topic": "venues"}),
    ]
    env = tailing_env(kafka, tmp_path, demo_events=300, demo_references=40, lookups=chain)
    env.update(ENRICH_KAFKA_EVENTS_TOPIC="quotes")
    done = subprocess.run(
        [sys.executable, "-m", "commands.demo_to_kafka"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    truth = demo_truth(load_settings(demo_events=300, demo_references=40))
    assert f"produced {truth.event_records} events to 'quotes'" in done.stdout
    assert len(kafka.consume_all("quotes")) == truth.event_records
    assert len(kafka.consume_all("securities")) == truth.reference_records
    assert len(kafka.consume_all("venues")) == len(EXCHANGES)

    env.pop("ENRICH_KAFKA_BROKERS")
    refused = subprocess.run(
        [sys.executable, "-m", "commands.demo_to_kafka"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "ENRICH_KAFKA_BROKERS" in refused.stderr


def timed_event(event_id: str, lookup_id: str, ts: float) -> tuple[bytes, bytes]:
    body = {"event_id": event_id, "security_id": lookup_id, "ts": ts}
    return lookup_id.encode(), json.dumps(body).encode()


def test_on_kafka_the_watermark_moves_once_every_partition_was_heard_from(
    kafka: MockKafka, live: Callable[..., Any], tmp_path: Path
) -> None:
    """The start checks tell the watermark how many partitions the events topic has, so a
    tailing run times a miss out as soon as every partition has passed its deadline,
    not after `ENRICH_EVENT_TIME_IDLE_SECONDS` (ten minutes here)."""
    kafka.produce("reference", [row("S1")], partition=0)
    kafka.produce("events", [timed_event("waits", "K", 100.0)], partition=0)
    for partition in range(4):  # the mock cluster makes topics of four partitions
        kafka.produce("events", [timed_event(f"p{partition}", "S1", 200.0)], partition=partition)
    proc = live(
        lookups=[SECURITY_ONLY[0].model_copy(update={"timeout_clock": "event"})],
        miss_timeout_seconds=5,
        event_time_idle_seconds=600,
    )
    db = tmp_path / "enriched.sqlite"
    table = wait_for(has_rows(db, {"waits", "p0", "p1", "p2", "p3"}), "the timeout", proc, tmp_path)
    assert (table["waits"]["status"], table["waits"]["miss_reason"]) == ("lookup_miss", "timeout")
