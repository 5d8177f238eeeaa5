"""Consumer lag and committed offsets, over real sockets against the mock cluster.

Lag is read from the registry the metrics endpoint serves. Commits are read
back the way `kafka-consumer-groups` does: `committed()` of the group.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import run_main
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from conftest import MockKafka
from flowrun import flow_env, init_recovery, kill_group, start_flow, tail
from prometheus_client import REGISTRY

from config.base import SettingsError
from config.lookups import DEMO_LOOKUPS
from dataflows.flow import build_flow
from dataflows.settings import load_settings
from recovery_store.resume import resume_point, resume_snapshots
from recovery_store.store import read_store
from recovery_store.unpickle import loads
from sources import kafka_progress
from sources.kafka import EventSource

PARTITIONS = 4
"""The mock cluster creates topics with four partitions."""
EPOCH = timedelta(milliseconds=50)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("ENRICH_", "BYTEWAX_")):
            monkeypatch.delenv(name)


def unique(name: str) -> str:
    """Topics and groups of their own: the mock cluster and the registry live per process."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def lag(topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value(
        "enrich_kafka_consumer_lag", {"topic": topic, "partition": str(partition)}
    )


def committed(kafka: MockKafka, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition; a partition without one is left out."""
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": group})
    try:
        found = consumer.committed(
            [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10
        )
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in found if tp.offset >= 0}


def fill(kafka: MockKafka, topic: str, counts: list[int], reference: bool = False) -> None:
    """`counts[p]` records into partition p: events, or reference rows."""
    for partition, count in enumerate(counts):
        records = []
        for i in range(count):
            key = f"S{partition}-{i}"
            body: dict[str, Any] = (
                {"cusip": "C", "name": key, "sector": "Tech", "version": 1}
                if reference
                else {"event_id": f"{topic}-{partition}-{i}", "security_id": key}
            )
            records.append((key.encode(), json.dumps(body).encode()))
        kafka.produce(topic, records, partition=partition)


def run(kafka: MockKafka, tmp_path: Path, events: str, reference: str, **overrides: Any) -> None:
    settings = load_settings(
        source="kafka",
        kafka_brokers=kafka.bootstrap,
        kafka_events_topic=events,
        lookups=[DEMO_LOOKUPS[0].model_copy(update={"topic": reference})],
        kafka_stop_at_end=True,
        miss_timeout_seconds=3600,
        sqlite_path=tmp_path / "enriched.sqlite",
        dead_letter_path=tmp_path / "dead_letters.jsonl",
        progress_seconds=0,
        **overrides,
    )
    run_main(build_flow(settings), epoch_interval=EPOCH)


EVENT_COUNTS = [7, 3, 0, 12]
REFERENCE_COUNTS = [2, 5, 1, 0]


def test_a_bounded_run_commits_its_end_to_the_group_and_shows_no_lag(
    kafka: MockKafka, tmp_path: Path
) -> None:
    events, reference, group = unique("events"), unique("reference"), unique("group")
    fill(kafka, events, EVENT_COUNTS)
    fill(kafka, reference, REFERENCE_COUNTS, reference=True)

    run(kafka, tmp_path, events, reference, kafka_commit_group=group)

    # Every partition read from has its end committed; an empty one has no offset to commit.
    assert committed(kafka, group, events) == {p: n for p, n in enumerate(EVENT_COUNTS) if n}
    assert committed(kafka, group, reference) == {p: n for p, n in enumerate(REFERENCE_COUNTS) if n}
    for topic in (events, reference):
        assert [lag(topic, p) for p in range(PARTITIONS)] == [0.0] * PARTITIONS


def test_without_a_commit_group_nothing_is_committed(kafka: MockKafka, tmp_path: Path) -> None:
    events, reference = unique("events"), unique("reference")
    fill(kafka, events, EVENT_COUNTS)
    fill(kafka, reference, REFERENCE_COUNTS, reference=True)

    run(kafka, tmp_path, events, reference)

    for topic in (events, reference):
        assert committed(kafka, kafka_progress.UNUSED_GROUP, topic) == {}
        assert [lag(topic, p) for p in range(PARTITIONS)] == [0.0] * PARTITIONS


def test_failing_commits_are_loud_and_the_run_goes_on(
    kafka: MockKafka, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A group another consumer has joined refuses the flow's commits (unknown member)."""
    events, reference, group = unique("events"), unique("reference"), unique("group")
    fill(kafka, events, EVENT_COUNTS)
    fill(kafka, reference, REFERENCE_COUNTS, reference=True)
    rival = Consumer(
        {"bootstrap.servers": kafka.bootstrap, "group.id": group, "session.timeout.ms": "6000"}
    )
    rival.subscribe([events])
    deadline = time.monotonic() + 30
    while not rival.assignment():
        rival.poll(0.1)
        assert time.monotonic() < deadline, "the rival never joined its group"
    try:
        with caplog.at_level(logging.INFO, logger="enrich.kafka"):
            run(kafka, tmp_path, events, reference, kafka_commit_group=group)
    finally:
        rival.close()

    errors = REGISTRY.get_sample_value("enrich_kafka_commit_errors_total", {"topic": events})
    assert errors and errors >= 1
    said = [r.getMessage() for r in caplog.records if r.name == "enrich.kafka"]
    about_events = [line for line in said if f"{events}[" in line]
    assert len(about_events) == 1, said
    assert group in about_events[0] and "Unknown member" in about_events[0]
    with sqlite3.connect(tmp_path / "enriched.sqlite") as db:
        (stored,) = db.execute("SELECT COUNT(*) FROM enriched_events").fetchone()
    assert stored == sum(EVENT_COUNTS)


def test_lag_counts_the_backlog_left_to_read(
    kafka: MockKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = unique("events")
    fill(kafka, topic, [100])
    monkeypatch.setattr(kafka_progress, "LAG_SECONDS", 0.0)
    source = EventSource([kafka.bootstrap], topic, {}, 10, False, start=OFFSET_BEGINNING)
    part = source.build_part("events_in", f"0-{topic}", None)
    try:
        assert lag(topic, 0) is None  # nothing fetched yet: unknown, not zero
        read = 0
        deadline = time.monotonic() + 30
        while read < 35:
            read += len(part.next_batch())
            assert time.monotonic() < deadline, "the mock cluster sent nothing"
            if read:
                # The batch just read is counted at once: high watermark minus next offset.
                assert lag(topic, 0) == 100 - read
        fill(kafka, topic, [20])
        deadline = time.monotonic() + 30
        while lag(topic, 0) != 120 - read:
            read += len(part.next_batch())
            assert time.monotonic() < deadline, f"lag stuck at {lag(topic, 0)}, read {read}"
    finally:
        part.close()


def test_only_a_snapshot_proved_complete_is_committed(kafka: MockKafka) -> None:
    """Bytewax calls `next_batch` again only once the epoch of the last snapshot is complete."""
    topic, group = unique("events"), unique("group")
    fill(kafka, topic, [30])
    source = EventSource(
        [kafka.bootstrap], topic, {}, 10, False, commit_group=group, start=OFFSET_BEGINNING
    )
    part = source.build_part("events_in", f"0-{topic}", None)

    def wait_until_committed(offset: int) -> None:
        deadline = time.monotonic() + 30
        while committed(kafka, group, topic).get(0) != offset:
            part.next_batch()  # serves the commit's acknowledgement
            assert time.monotonic() < deadline, f"{offset} never committed"

    try:
        read = 0
        while read < 10:
            read += len(part.next_batch())
        first = part.snapshot()
        assert first == read
        # Taken, but its epoch is not known to be complete: not committed.
        assert committed(kafka, group, topic) == {}
        while read < 20:
            read += len(part.next_batch())  # the first call commits `first`
        wait_until_committed(first)
        second = part.snapshot()
        assert second == read > first
        assert committed(kafka, group, topic) == {0: first}
        part.snapshot()  # a snapshot call also proves the one before it complete
        wait_until_committed(second)
    finally:
        part.close()


def resume_offsets(recovery: Path, step: str) -> dict[int, int]:
    """The offsets a restart would resume the step's partitions from, by partition."""
    store = read_store(recovery)
    found: dict[int, int] = {}
    for snap in resume_snapshots(store, resume_point(store)):
        state = None if snap.data is None else loads(snap.data)
        if snap.step_id == step and isinstance(state, int):
            found[int(snap.state_key.partition("-")[0])] = state
    return found


def test_commits_never_run_ahead_of_what_a_restart_resumes_from(
    kafka: MockKafka, tmp_path: Path
) -> None:
    """Killed while it commits, the group holds no offset past the recovery store's."""
    events, reference, group = unique("events"), unique("reference"), unique("group")
    counts = [3_000] * PARTITIONS
    fill(kafka, reference, [1], reference=True)
    fill(kafka, events, counts)
    env = flow_env(
        tmp_path,
        source="kafka",
        kafka_brokers=kafka.bootstrap,
        kafka_events_topic=events,
        kafka_batch_size=20,
        kafka_commit_group=group,
        lookups=[DEMO_LOOKUPS[0].model_copy(update={"topic": reference})],
        miss_timeout_seconds=3600,
    )
    recovery = init_recovery(tmp_path)
    proc = start_flow(tmp_path, recovery, env, "run.log")
    try:
        deadline = time.monotonic() + 120
        while sum(committed(kafka, group, events).values()) < 1_000:
            assert proc.poll() is None, tail(tmp_path, "run.log")
            assert time.monotonic() < deadline, f"no commits:\n{tail(tmp_path, 'run.log')}"
            time.sleep(0.05)
    finally:
        kill_group(proc)
    progress = committed(kafka, group, events)
    resumes = resume_offsets(tmp_path / "recovery", "enrich.events_in")
    assert progress, "nothing committed"
    for partition, offset in progress.items():
        assert offset <= resumes[partition], (partition, progress, resumes)
    assert sum(progress.values()) < sum(counts), "killed too late to show anything"


def test_an_empty_commit_group_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="ENRICH_KAFKA_COMMIT_GROUP"):
        load_settings(kafka_commit_group="")


def test_a_group_id_in_the_kafka_config_is_refused_naming_the_setting_to_use() -> None:
    """Merged last into every consumer's config, it would silently replace the commit group."""
    with pytest.raises(
        SettingsError, match=r"ENRICH_KAFKA_CONFIG.*ENRICH_KAFKA_COMMIT_GROUP"
    ) as err:
        load_settings(
            source="kafka",
            kafka_brokers="127.0.0.1:9092",
            kafka_config={"group.id": "mine"},
            kafka_commit_group="enrich-flow",
        )
    assert "mine" not in str(err.value), "a configured value is never echoed"
