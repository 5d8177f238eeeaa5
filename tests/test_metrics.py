"""The metrics added for operations: batch histograms, join counters and sink errors.

Counters live in the process-wide registry and other tests add to them, so
every check here compares a value before and after.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from faults import FakeClock, FlakyDialect
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import generate_latest

from dataflows.flow import decoder
from dataflows.settings import load_settings
from operators.decode import decode_batch
from operators.enrichment import Tally
from operators.records import CaughtUp, Event, Joined, Kind, MissReason, RawRecord, Status
from operators.sink_rows import SinkRow
from sinks.schema import create_tables
from sinks.sqlite import SqliteDialect
from sinks.table import DeadLetterTable, EnrichedTable
from sinks.upsert import UpsertSink
from telemetry.histogram import BatchHistogram
from telemetry.record import record_decoded, record_tally

TABLE = EnrichedTable(
    name="enriched_events",
    event_columns=(("price", "float"),),
    reference_columns=(("name", "str"),),
    unstored_fields=frozenset({"event_id", "security_id", "ts"}),
)


STATE = "enrich_sink_circuit_state"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """Values of some samples now, to compare with later."""

    def __init__(self, *samples: tuple[str, dict[str, str]]) -> None:
        self._before = {
            (name, tuple(labels.items())): sample(name, **labels) for name, labels in samples
        }

    def __call__(self, name: str, **labels: str) -> float:
        return sample(name, **labels) - self._before[name, tuple(labels.items())]


def test_batch_histogram_counts_each_value_into_every_bucket_at_or_above_it() -> None:
    registry = CollectorRegistry()
    histogram = BatchHistogram("test_wait_seconds", "Test waits.", (0.5, 0.1, 1.0), registry)
    histogram.observe_many([0.1, 0.05, 0.7, 3.0])
    histogram.observe_many([])
    histogram.observe_many(iter([1.0]))

    def value(suffix: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"test_wait_seconds{suffix}", labels)

    assert [value("_bucket", le=le) for le in ("0.1", "0.5", "1.0", "+Inf")] == [2, 2, 4, 5]
    assert value("_count") == 5
    assert value("_sum") == pytest.approx(4.85)
    exposed = generate_latest(registry).decode()
    assert "# TYPE test_wait_seconds histogram" in exposed
    assert 'test_wait_seconds_bucket{le="0.1"} 2.0' in exposed


def test_batch_histogram_leaves_out_values_that_are_not_finite() -> None:
    """-inf and inf in one batch raised in `fsum`; one NaN made the sum NaN for good."""
    registry = CollectorRegistry()
    histogram = BatchHistogram("test_age_seconds", "Test ages.", (1.0, 10.0), registry)
    histogram.observe_many([math.inf, -math.inf, 0.5])
    histogram.observe_many([2.0, math.nan, 1e308, 1e308])
    histogram.observe_many([math.nan])
    histogram.observe_many([3.0])

    def value(suffix: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"test_age_seconds{suffix}", labels)

    assert [value("_bucket", le=le) for le in ("1.0", "10.0", "+Inf")] == [1, 2, 2]
    assert (value("_count"), value("_sum")) == (2, 3.5)
    assert histogram.left_out == 7


@pytest.mark.parametrize("buckets", [(), (1.0, 1.0), (1.0, float("inf"))])
def test_batch_histogram_refuses_buckets_it_cannot_serve(buckets: Sequence[float]) -> None:
    with pytest.raises(ValueError, match="buckets must be distinct finite bounds"):
        BatchHistogram("test_bad_seconds", "Bad.", buckets, CollectorRegistry())


def test_a_tally_adds_late_waits_in_seconds_timeouts_and_stale_updates() -> None:
    delta = Delta(
        ("enrich_late_wait_seconds_count", {}),
        ("enrich_late_wait_seconds_sum", {}),
        ("enrich_late_wait_seconds_bucket", {"le": "0.25"}),
        ("enrich_late_wait_seconds_bucket", {"le": "1.0"}),
        (
            "enrich_events_out_total",
            {"lookup": "exchange", "status": "lookup_miss", "miss_reason": "timeout"},
        ),
        (
            "enrich_events_out_total",
            {"lookup": "exchange", "status": "lookup_miss", "miss_reason": "overflow"},
        ),
        ("enrich_reference_updates_total", {"lookup": "exchange", "outcome": "stale"}),
    )
    record_tally(
        "exchange",
        Tally(
            late=2,
            late_waits_ms=[250.0, 1500.0],
            missed_out={MissReason.TIMEOUT: 3, MissReason.OVERFLOW: 1},
            stale=2,
        ),
    )
    assert delta("enrich_late_wait_seconds_count") == 2
    assert delta("enrich_late_wait_seconds_sum") == pytest.approx(1.75)
    assert delta("enrich_late_wait_seconds_bucket", le="0.25") == 1
    assert delta("enrich_late_wait_seconds_bucket", le="1.0") == 1
    miss = {"lookup": "exchange", "status": "lookup_miss"}
    assert delta("enrich_events_out_total", **miss, miss_reason="timeout") == 3
    assert delta("enrich_events_out_total", **miss, miss_reason="overflow") == 1
    assert delta("enrich_reference_updates_total", lookup="exchange", outcome="stale") == 2


def test_records_in_count_events_and_references_but_not_caught_up_markers() -> None:
    delta = Delta(
        ("enrich_records_in_total", {"kind": "event"}),
        ("enrich_records_in_total", {"kind": "reference"}),
    )
    batch = [
        RawRecord(Kind.EVENT, b"A", b'{"event_id": "e1", "security_id": "A"}', "t/event/0/0"),
        RawRecord(Kind.EVENT, b"A", b"not json", "t/event/0/1"),
        RawRecord(Kind.REFERENCE, b"A", b'{"name": "Alpha"}', "t/reference/0/0", lookup="security"),
        CaughtUp("reference/0", 1, "security"),
    ]
    record_decoded(decode_batch(decoder(load_settings()), "security", batch), len(batch))
    assert delta("enrich_records_in_total", kind="event") == 2
    assert delta("enrich_records_in_total", kind="reference") == 1


def enriched(event_id: str, ts: float | None, name: object = "Alpha") -> SinkRow:
    fields: dict[str, Any] = {"event_id": event_id, "security_id": "A", "ts": ts, "price": 1.0}
    event = Event(event_id, "A", ts, fields, f"test/event/0/{event_id}")
    return TABLE.rows.of(Joined(event, (name, 1), 1, Status.ENRICHED, None, 0.0))


def write(dialect: Any, batch: list[SinkRow], clock: FakeClock | None = None) -> None:
    upsert = UpsertSink(dialect, TABLE, 1, 100, clock=clock or FakeClock())
    partition = upsert.build_part("sink", "0", None)
    try:
        partition.write_batch([batch])
    finally:
        partition.close()


ERRORS = (
    ("enrich_sink_errors_total", {"kind": "transient"}),
    ("enrich_sink_errors_total", {"kind": "permanent"}),
    ("enrich_sink_retries_total", {}),
)


def test_transient_errors_are_counted_and_retried_until_the_write_lands(tmp_path: Path) -> None:
    delta = Delta(*ERRORS)
    clock = FakeClock()
    dialect = FlakyDialect(SqliteDialect(tmp_path / "out.sqlite"), failures=3)
    write(dialect, [enriched("e1", 1.0)], clock)
    assert delta("enrich_sink_errors_total", kind="transient") == 3
    assert delta("enrich_sink_retries_total") == 3
    assert delta("enrich_sink_errors_total", kind="permanent") == 0
    # Full jitter: the k-th pause is drawn from a window of 0.1 s doubled k times.
    assert len(clock.pauses) == 3
    assert all(0 <= pause <= 0.1 * 2**k for k, pause in enumerate(clock.pauses))
    with closing(sqlite3.connect(tmp_path / "out.sqlite")) as conn:
        assert conn.execute("SELECT event_id FROM enriched_events").fetchall() == [("e1",)]


def test_the_circuit_state_gauge_shows_open_while_the_sink_waits_and_closed_after(
    tmp_path: Path,
) -> None:
    """Five failures open the circuit; the wait before the probe happens while it reads 1."""
    delta = Delta(*ERRORS)
    seen: list[tuple[float, float]] = []
    clock = FakeClock(on_sleep=lambda s: seen.append((s, sample(STATE, partition="0"))))
    inner = SqliteDialect(tmp_path / "out.sqlite")
    create_tables(inner, TABLE, DeadLetterTable())
    write(FlakyDialect(inner, failures=5), [enriched("e1", 1.0)], clock)
    assert delta("enrich_sink_errors_total", kind="transient") == 5
    assert delta("enrich_sink_retries_total") == 5
    assert [state for _, state in seen] == [0, 0, 0, 0, 1]
    assert seen[4][0] == pytest.approx(30.0), "the open circuit waits its reset time to probe"
    assert sample(STATE, partition="0") == 0


def test_a_permanent_error_is_counted_and_not_retried(tmp_path: Path) -> None:
    delta = Delta(*ERRORS)
    clock = FakeClock()
    unbindable = enriched("e1", 1.0, name=object())
    with pytest.raises(sqlite3.ProgrammingError):
        write(SqliteDialect(tmp_path / "out.sqlite"), [unbindable], clock)
    assert delta("enrich_sink_errors_total", kind="permanent") == 1
    assert delta("enrich_sink_errors_total", kind="transient") == 0
    assert delta("enrich_sink_retries_total") == 0
    assert clock.pauses == []


def test_event_to_sink_latency_is_commit_time_minus_event_time(tmp_path: Path) -> None:
    delta = Delta(
        ("enrich_event_to_sink_seconds_count", {}), ("enrich_event_to_sink_seconds_sum", {})
    )
    times = [time.time() - 120.0, time.time() - 30.0]
    before = time.time()
    write(
        SqliteDialect(tmp_path / "out.sqlite"),
        [enriched("e1", times[0]), enriched("e2", None), enriched("e3", times[1])],
    )
    after = time.time()
    assert delta("enrich_event_to_sink_seconds_count") == 2, "events without a time are skipped"
    latency = delta("enrich_event_to_sink_seconds_sum")
    assert 2 * before - sum(times) <= latency <= 2 * after - sum(times)
