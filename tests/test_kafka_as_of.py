"""An as-of lookup over Kafka, end to end: validity times from the records' Kafka
timestamps, timeouts on the events' watermark; the librdkafka mock cluster over real
sockets, the real dataflow in process."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import MockKafka
from test_kafka import SECURITY_ONLY, read_table, run_bounded

AS_OF = [
    SECURITY_ONLY[0].model_copy(
        update={
            "topic": "asof-reference",
            "mode": "as_of",
            "valid_from": "record_time",
            "timeout_clock": "event",
            "miss_timeout_seconds": 100.0,
        }
    )
]


def quote(event_id: str, security: str, ts: float) -> tuple[bytes, bytes]:
    body = {"event_id": event_id, "security_id": security, "ts": ts}
    return security.encode(), json.dumps(body).encode()


def version(name: str) -> tuple[bytes, bytes]:
    return b"S1", json.dumps({"cusip": "C1", "name": name, "sector": "Tech"}).encode()


def test_events_join_the_version_their_kafka_timestamps_make_valid(
    kafka: MockKafka, tmp_path: Path
) -> None:
    kafka.produce("asof-reference", [version("Old")], partition=0, timestamp_ms=1_000_000)
    kafka.produce("asof-reference", [version("New")], partition=0, timestamp_ms=2_000_000)
    kafka.produce("asof-reference", [(b"S1", None)], partition=0, timestamp_ms=3_000_000)
    quotes = [
        quote("before", "S1", 500.0),
        quote("old", "S1", 1_500.0),
        quote("new", "S1", 2_500.0),
        quote("gone", "S1", 3_500.0),
        quote("after", "S1", 4_000.0),
    ]
    kafka.produce("asof-events", quotes, partition=0)
    run_bounded(kafka, tmp_path, lookups=AS_OF, kafka_events_topic="asof-events")
    table = read_table(tmp_path / "enriched.sqlite")
    found = {eid: (row["status"], row["miss_reason"], row["name"]) for eid, row in table.items()}
    assert found == {
        # Nothing valid yet at 500 s: it waited; 4,000 s passed its deadline (600 s).
        "before": ("lookup_miss", "timeout", None),
        "old": ("enriched", None, "Old"),
        "new": ("enriched", None, "New"),
        # Deleted from 3,000 s on: both wait. At the end the watermark is the last event
        # time, 4,000 s, past 'gone''s deadline (3,600 s) but not 'after''s (4,100 s).
        "gone": ("lookup_miss", "timeout", None),
        "after": ("lookup_miss", "end_of_input", None),
    }
