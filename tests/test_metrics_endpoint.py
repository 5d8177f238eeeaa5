"""Scrape Bytewax's own API server during a real run and hold the numbers against the run.

The dataflow is the real one (`build_flow` with the demo source, the SQLite
sink and the dead-letter file) with one change: each demo partition stays
open after its last record until the test releases it. So the process, and
with it the API server, lives on after every record has gone through, and a
short miss timeout sends every event whose row never comes out as a timeout
rather than at end of input. Once the scraped numbers stop moving the test
releases the source, lets the run end, and compares the scrape with the plan's
truth and with the table and dead-letter file the run left behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import closing, suppress
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from prometheus_client.parser import text_string_to_metric_families

from dataflows.flow import build_flow, demo_source
from dataflows.settings import load_settings
from operators.records import Kind, RawRecord
from sources.demo import EXCHANGES, DemoSource, DemoTruth, build_plan

RELEASE_ENV = "METRICS_TEST_RELEASE"
SIZES = {"demo_events": 3_000, "demo_references": 300}
RATE = 3_000
"""Events/s: each source batch then holds 50 ms of events, so a late row arrives
at least one batch, and so some real time, after the events waiting for it."""
MISS_TIMEOUT = 0.5
RUN_TIMEOUT = 120.0
IDLE_SECONDS = 0.05

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class HeldPartition(StatefulSourcePartition[RawRecord, int]):
    """A demo partition that, once read to its end, waits for the release file to end."""

    def __init__(self, inner: StatefulSourcePartition[RawRecord, int], release: Path) -> None:
        self._inner = inner
        self._release = release
        self._drained = False

    def next_batch(self) -> list[RawRecord]:
        if self._drained:
            if self._release.exists():
                raise StopIteration
            return []
        try:
            return self._inner.next_batch()
        except StopIteration:
            self._drained = True
            return []

    def next_awake(self) -> datetime | None:
        if self._drained:
            return datetime.now(UTC) + timedelta(seconds=IDLE_SECONDS)
        return self._inner.next_awake()

    def snapshot(self) -> int:
        return self._inner.snapshot()


class HeldSource(FixedPartitionedSource[RawRecord, int]):
    def __init__(self, inner: DemoSource, release: Path) -> None:
        self._inner = inner
        self._release = release

    def list_parts(self) -> list[str]:
        return self._inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> HeldPartition:
        return HeldPartition(self._inner.build_part(step_id, for_part, resume_state), self._release)


def held_flow() -> Dataflow:
    """Run by `python -m bytewax.run "tests.test_metrics_endpoint:held_flow()"`."""
    settings = load_settings()
    held = HeldSource(demo_source(settings), Path(os.environ[RELEASE_ENV]))
    return build_flow(settings, {"input": held})


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int) -> Samples | None:
    """The `enrich_*` samples the API server serves, or None while it is not up yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("enrich_")
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (sample, _), v in samples.items() if sample == name)


def settled_scrape(
    port: int, proc: subprocess.Popen[bytes], truth: DemoTruth, log: Path
) -> Samples:
    """Scrape until every record is in, nothing waits, and two scrapes agree."""
    deadline = time.monotonic() + RUN_TIMEOUT
    previous: Samples | None = None
    while True:
        assert proc.poll() is None, f"the run ended early:\n{log.read_text()[-3_000:]}"
        assert time.monotonic() < deadline, f"the numbers never settled: {previous}"
        samples = scrape(port)
        if (
            samples is not None
            and total(samples, "enrich_records_in_total") == truth.records + len(EXCHANGES)
            and total(samples, "enrich_pending_events") == 0
            and samples == previous
        ):
            return samples
        previous = samples
        time.sleep(0.3)


def planned_copies(lookup_ids: frozenset[str]) -> int:
    """Event records in the plan, duplicates included, whose lookup id is one of these."""
    plan = build_plan(demo_source(load_settings(**SIZES)).cfg)
    return sum(
        1
        for partition in plan.partitions
        for kind, key, _ in partition
        if kind is Kind.EVENT and key is not None and key.decode() in lookup_ids
    )


def test_scraped_metrics_match_the_plan_the_table_and_the_dead_letters(tmp_path: Path) -> None:
    # Imported here: the dataflow subprocess imports this module as `tests.…`,
    # where the test-only helpers are not importable.
    from flowrun import ROOT, flow_env

    port = free_port()
    release = tmp_path / "release"
    env = flow_env(
        tmp_path,
        miss_policy="dead_letter",
        miss_timeout_seconds=MISS_TIMEOUT,
        demo_rate=RATE,
        progress_seconds=2.0,
        log_level="INFO",
        **SIZES,
    )
    env.update(
        BYTEWAX_DATAFLOW_API_ENABLED="true",
        BYTEWAX_DATAFLOW_API_PORT=str(port),
        BYTEWAX_DATAFLOW_API_CACHE_PATH=str(tmp_path),
        **{RELEASE_ENV: str(release)},
    )
    truth = build_plan(demo_source(load_settings(**SIZES)).cfg).truth
    log = tmp_path / "run.log"
    started = time.time()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "tests.test_metrics_endpoint:held_flow()"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        samples = settled_scrape(port, proc, truth, log)
        assert (tmp_path / "dataflow.json").exists(), "the API server wrote its cache here"
        settled = time.time()
        release.touch()
        assert proc.wait(timeout=RUN_TIMEOUT) == 0, log.read_text()[-3_000:]
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def of(name: str, **labels: str) -> float:
        return value(samples, name, **labels)

    letters = [
        json.loads(line) for line in (tmp_path / "dead_letters.jsonl").read_text().splitlines()
    ]
    with closing(sqlite3.connect(tmp_path / "enriched.sqlite")) as conn:
        table = conn.execute(
            "SELECT event_id, status, event_time, json_extract(stages, '$[0].waited_ms') "
            "FROM enriched_events"
        ).fetchall()

    # Records in, and what could not be decoded.
    assert of("enrich_records_in_total", kind="event") == truth.event_records
    references = truth.reference_records + len(EXCHANGES)
    assert of("enrich_records_in_total", kind="reference") == references
    reasons = Counter(letter["reason"] for letter in letters)
    assert {
        labels: n for (name, labels), n in samples.items() if name == "enrich_dead_letters_total"
    } == {frozenset({("reason", reason)}): count for reason, count in reasons.items()}
    assert sum(reasons.values()) - reasons["lookup_miss"] == truth.malformed

    # Every decoded copy is looked up once and leaves once: hit, late or timed out.
    decoded = truth.good_events + truth.duplicate_events
    hits, misses = (
        of("enrich_lookups_total", lookup="security", result="hit"),
        of("enrich_lookups_total", lookup="security", result="miss"),
    )
    assert hits + misses == decoded
    security = {"lookup": "security"}
    late = of("enrich_events_out_total", **security, status="late_enriched", miss_reason="")
    timeouts = of(
        "enrich_events_out_total", **security, status="lookup_miss", miss_reason="timeout"
    )
    assert of("enrich_events_out_total", **security, status="enriched", miss_reason="") == hits
    assert late + timeouts == misses
    # The exchanges are all read before stage two looks anything up: it only hits.
    exchange = {"lookup": "exchange"}
    assert of("enrich_lookups_total", **exchange, result="hit") == hits + late
    assert of("enrich_lookups_total", **exchange, result="miss") == 0
    assert of("enrich_late_wait_seconds_count") == late

    # Timeouts: each one is a dead letter saying so, and every event of an id
    # that never exists is one of them (the source never ends while they wait).
    timed_out = [
        letter
        for letter in letters
        if letter["reason"] == "lookup_miss" and letter["detail"].endswith("(timeout)")
    ]
    assert len(timed_out) == reasons["lookup_miss"] == timeouts
    assert timeouts >= planned_copies(truth.never_existing_ids) > 0

    # Reference updates, against what the plan injected.
    updates = partial(of, "enrich_reference_updates_total", **security)
    assert updates(outcome="stale") == len(truth.stale_ids) > 0
    assert updates(outcome="deleted") == len(truth.deleted_ids)
    assert of("enrich_reference_rows", **security) == SIZES["demo_references"] - len(
        truth.deleted_ids - truth.republished_ids
    )
    assert of("enrich_reference_rows", **exchange) == len(EXCHANGES)

    # The sink: every copy that was not dead-lettered, in batches, without errors.
    written = decoded - reasons["lookup_miss"]
    assert total(samples, "enrich_sink_rows_total") == written
    assert of("enrich_sink_rows_total", status="enriched") == hits
    assert of("enrich_sink_rows_total", status="late_enriched") == late
    assert len(table) == len({row[0] for row in table}) <= written
    assert {row[1] for row in table} <= {"enriched", "late_enriched"}
    assert of("enrich_sink_batches_total") == of("enrich_sink_batch_seconds_count") > 0
    assert total(samples, "enrich_sink_errors_total") == of("enrich_sink_retries_total") == 0

    # Latencies, bounded by the wall clock around the run and the events' own times.
    assert of("enrich_event_to_sink_seconds_count") == written
    event_times = [row[2] for row in table]
    assert None not in event_times
    latency = of("enrich_event_to_sink_seconds_sum") / written
    assert started - max(event_times) <= latency <= settled - min(event_times)
    assert of("enrich_late_wait_seconds_bucket", le="+Inf") == late
    # An event sent once is one row, so its wait is in the table (in ms, in the
    # security lookup's outcome); the rest of the histogram is the waits of
    # copies of duplicated events.
    single = [
        row[3]
        for row in table
        if row[1] == "late_enriched" and row[0] not in truth.duplicate_event_ids
    ]
    copies = late - len(single)
    assert 0 <= copies <= 2 * truth.duplicate_events
    waits_of_copies = of("enrich_late_wait_seconds_sum") - sum(single) / 1000.0
    assert -1e-6 <= waits_of_copies <= copies * (settled - started)
    assert sum(single) > 0
