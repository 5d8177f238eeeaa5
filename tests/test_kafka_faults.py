"""Kafka faults at start and while running: each is loud, bounded and loses nothing.

Real sockets throughout: the in-process mock cluster (`kafka` fixture) where
the cluster only has to exist, and a mock cluster in a child process
(`kafka_process`) where a test pauses it, or deletes and recreates a topic
the way an operator or a broker on empty storage would. The dataflow runs as
`python -m bytewax.run dataflows.enrich`, so exit statuses and messages are
the ones an operator sees.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import run_main
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from conftest import MockKafka
from flowrun import ROOT, flow_env, init_recovery, kill_group, start_flow, tail
from kafka_process import KafkaProcess, running

from config.lookups import DEMO_LOOKUPS
from dataflows.flow import build_flow
from dataflows.settings import load_settings
from dataflows.stopping import fault_in
from sources.broker_health import ClusterWatch
from sources.kafka_admin import config_checked
from sources.kafka_errors import KafkaConfigRefused, MissingTopics, OffsetsLost
from sources.kafka_faults import ResetPolicy, restart_offset
from telemetry import metrics

SECURITY_ONLY = [DEMO_LOOKUPS[0]]
"""One lookup, on the `reference` topic."""
RUN_SECONDS = 120.0
ENTRY = [sys.executable, "-m", "bytewax.run", "dataflows.enrich"]
DEMO_TO_KAFKA = [sys.executable, "-m", "commands.demo_to_kafka"]
PUBLISH = [sys.executable, "-m", "commands", "publish", "--once"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("ENRICH_", "BYTEWAX_")):
            monkeypatch.delenv(name)


@pytest.fixture
def kafka_process() -> Iterator[KafkaProcess]:
    with running() as cluster:
        yield cluster


def closed_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def env_for(work: Path, brokers: str, **settings: Any) -> dict[str, str]:
    defaults: dict[str, Any] = {
        "source": "kafka",
        "lookups": SECURITY_ONLY,
        "kafka_brokers": brokers,
        "kafka_stop_at_end": True,
        "kafka_start_timeout_seconds": 10,
        "miss_timeout_seconds": 3600,
    }
    return flow_env(work, **{**defaults, **settings})


def run(command: list[str], env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
        start_new_session=True,
    )


def event(event_id: str, lookup_id: str = "S1") -> tuple[bytes, bytes]:
    return lookup_id.encode(), json.dumps({"event_id": event_id, "security_id": lookup_id}).encode()


def row(lookup_id: str) -> tuple[bytes, bytes]:
    value = {"cusip": "C", "name": f"Name {lookup_id}", "sector": "Tech", "version": 1}
    return lookup_id.encode(), json.dumps(value).encode()


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": "5"})
    for key, value in records:
        producer.produce(topic, value, key, partition=0)
    assert producer.flush(10) == 0


def event_ids(db: Path) -> set[str]:
    if not db.exists():
        return set()
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        try:
            return {r[0] for r in conn.execute("SELECT event_id FROM enriched_events")}
        except sqlite3.OperationalError:
            return set()


def cluster_topics(bootstrap: str) -> set[str]:
    """The whole cluster's listing, which creates nothing."""
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)


def wait_until(check: Callable[[], bool], what: str, proc: Any, work: Path) -> None:
    deadline = time.monotonic() + RUN_SECONDS
    while not check():
        assert proc.poll() is None, f"the run ended before {what}:\n{tail(work, 'run.log')}"
        assert time.monotonic() < deadline, f"never saw {what}:\n{tail(work, 'run.log')}"
        time.sleep(0.1)


def log_has(work: Path, text: str) -> Callable[[], bool]:
    return lambda: text in (work / "run.log").read_text(errors="replace")


# 1. Unreachable brokers: bounded, named, interruptible.


@pytest.mark.parametrize("command", [ENTRY, DEMO_TO_KAFKA], ids=["dataflow", "demo_to_kafka"])
def test_unreachable_brokers_end_start_up_in_bounded_time_naming_them(
    tmp_path: Path, command: list[str]
) -> None:
    brokers = f"127.0.0.1:{closed_port()}"
    env = env_for(tmp_path, brokers, kafka_start_timeout_seconds=2)
    started = time.monotonic()
    done = run(command, env)
    assert done.returncode == 1, done.stderr[-2_000:]
    assert time.monotonic() - started < 30
    assert f"no Kafka broker of {brokers} (ENRICH_KAFKA_BROKERS)" in done.stderr
    assert "within 2 s (ENRICH_KAFKA_START_TIMEOUT_SECONDS)" in done.stderr
    assert "Connection refused" in done.stderr, "the last error says what was tried"
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_a_start_up_waiting_for_brokers(tmp_path: Path, signum: int) -> None:
    env = env_for(tmp_path, f"127.0.0.1:{closed_port()}", kafka_start_timeout_seconds=60)
    proc = start_flow(tmp_path, [], env, "run.log")
    try:
        time.sleep(3)
        assert proc.poll() is None, tail(tmp_path, "run.log")
        os.killpg(proc.pid, signum)
        status = proc.wait(timeout=10)
    finally:
        kill_group(proc)
    assert status == (130 if signum == signal.SIGINT else -signal.SIGTERM)
    assert "Traceback" not in tail(tmp_path, "run.log")


# 2. Missing topics: refused, named, never created.


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"kafka_events_topic": "evnets"}, "'evnets' (ENRICH_KAFKA_EVENTS_TOPIC)"),
        (
            {"lookups": [DEMO_LOOKUPS[0].model_copy(update={"topic": "refrence"})]},
            "'refrence' (ENRICH_LOOKUPS, lookup 'security')",
        ),
    ],
    ids=["events", "reference"],
)
def test_a_missing_topic_is_refused_at_start_and_not_created(
    kafka: MockKafka, tmp_path: Path, settings: dict[str, Any], named: str
) -> None:
    kafka.produce("reference", [row("S1")], partition=0)
    kafka.produce("events", [event("e1")], partition=0)
    done = run(ENTRY, env_for(tmp_path, kafka.bootstrap, **settings))
    assert done.returncode == 2, done.stderr[-2_000:]
    assert f"Kafka topic {named} does not exist" in done.stderr
    assert not event_ids(tmp_path / "enriched.sqlite")
    assert cluster_topics(kafka.bootstrap) == {"reference", "events"}


def test_a_flow_built_on_a_missing_topic_refuses_to_list_it(
    kafka: MockKafka, tmp_path: Path
) -> None:
    """Also without the entry point's check: the sources list partitions the same way."""
    kafka.produce("reference", [row("S1")], partition=0)
    settings = load_settings(
        source="kafka",
        lookups=SECURITY_ONLY,
        kafka_brokers=kafka.bootstrap,
        kafka_events_topic="evnets",
        kafka_stop_at_end=True,
        sqlite_path=tmp_path / "enriched.sqlite",
        dead_letter_path=tmp_path / "dead.jsonl",
        progress_seconds=0,
    )
    with pytest.raises(BaseException) as raised:
        run_main(build_flow(settings))
    assert isinstance(fault_in(raised.value), MissingTopics), raised.value
    assert "evnets" not in cluster_topics(kafka.bootstrap)


# 3. Lost offsets: never a silent reset.


def test_resumed_events_offset_lost_stops_the_flow_or_restarts_by_policy(
    kafka_process: KafkaProcess, tmp_path: Path
) -> None:
    bootstrap = kafka_process.bootstrap
    kafka_process.create_topic("events", 1)
    kafka_process.create_topic("reference", 1)
    produce(bootstrap, "reference", [row("S1")])
    produce(bootstrap, "events", [event(f"old{i}") for i in range(50)])
    recovery = init_recovery(tmp_path)
    db = tmp_path / "enriched.sqlite"
    env = env_for(tmp_path, bootstrap)

    first = run(ENTRY, env, *recovery)
    assert first.returncode == 0, first.stderr[-2_000:]
    assert len(event_ids(db)) == 50

    # The topic loses its data: recreated empty, then new events arrive.
    kafka_process.recreate_topic("events", 1)
    produce(bootstrap, "events", [event(f"new{i}") for i in range(20)])

    stopped = run(ENTRY, env, *recovery)
    assert stopped.returncode != 0
    assert (
        "Kafka topic 'events' partition 0: the dataflow reads next offset 50, but the "
        "partition holds offsets 0 to 20" in stopped.stderr
    ), stopped.stderr[-3_000:]
    assert "ENRICH_KAFKA_OFFSET_RESET_POLICY" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert len(event_ids(db)) == 50, "nothing was read past the gap"

    restarted = run(ENTRY, {**env, "ENRICH_KAFKA_OFFSET_RESET_POLICY": "earliest"}, *recovery)
    assert restarted.returncode == 0, restarted.stderr[-3_000:]
    assert "ENRICH_KAFKA_OFFSET_RESET_POLICY=earliest: going on from offset 0" in (restarted.stderr)
    assert event_ids(db) == {f"old{i}" for i in range(50)} | {f"new{i}" for i in range(20)}


def test_a_reference_topic_that_lost_snapshotted_records_stops_the_flow(
    kafka_process: KafkaProcess, tmp_path: Path
) -> None:
    bootstrap = kafka_process.bootstrap
    kafka_process.create_topic("events", 1)
    kafka_process.create_topic("reference", 1)
    produce(bootstrap, "reference", [row(f"S{i}") for i in range(30)])
    produce(bootstrap, "events", [event("e1")])
    recovery = init_recovery(tmp_path)
    env = env_for(tmp_path, bootstrap)
    assert run(ENTRY, env, *recovery).returncode == 0

    kafka_process.recreate_topic("reference", 1)
    produce(bootstrap, "reference", [row("S1")])
    stopped = run(ENTRY, env, *recovery)
    assert stopped.returncode != 0
    assert (
        "Kafka topic 'reference' partition 0: the dataflow read up to offset 30, but the "
        "partition holds offsets 0 to 1" in stopped.stderr
    ), stopped.stderr[-3_000:]

    latest = run(ENTRY, {**env, "ENRICH_KAFKA_OFFSET_RESET_POLICY": "latest"}, *recovery)
    assert latest.returncode == 0, latest.stderr[-3_000:]
    assert "ENRICH_KAFKA_OFFSET_RESET_POLICY=latest: going on from offset 1" in latest.stderr


@pytest.mark.parametrize(("policy", "offset"), [("earliest", 0), ("latest", 20), ("fail", None)])
def test_every_lost_offset_is_logged_as_an_error_and_counted(
    caplog: pytest.LogCaptureFixture, policy: ResetPolicy, offset: int | None
) -> None:
    counter = metrics.KAFKA_OFFSET_RESETS.labels("t-policy", policy)
    before = counter._value.get()
    with caplog.at_level(logging.ERROR, logger="enrich.kafka"):
        if offset is None:
            with pytest.raises(OffsetsLost, match="reads next offset 500, but the partition"):
                restart_offset(policy, "reads next", "t-policy", 3, 500, 0, 20)
        else:
            assert restart_offset(policy, "reads next", "t-policy", 3, 500, 0, 20) == offset
    assert counter._value.get() == before + 1
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert "'t-policy' partition 3" in record.getMessage()


def test_a_refused_property_is_named_and_every_value_hidden() -> None:
    config = {"no.such.property": "hunter2-secret", "sasl.password": "pw-secret-99"}
    with pytest.raises(KafkaConfigRefused) as raised, config_checked(config):
        AdminClient(config)
    message = str(raised.value)
    assert "refused property 'no.such.property'" in message
    assert "secret" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


# 4. Partitions added while running.


def test_partitions_added_while_running_stop_the_flow(
    kafka_process: KafkaProcess, tmp_path: Path
) -> None:
    bootstrap = kafka_process.bootstrap
    kafka_process.create_topic("events", 2)
    kafka_process.create_topic("reference", 1)
    produce(bootstrap, "reference", [row("S1")])
    produce(bootstrap, "events", [event("e1")])
    env = env_for(
        tmp_path,
        bootstrap,
        kafka_stop_at_end=False,
        kafka_metadata_check_seconds=0.3,
        # Only the new layout may stop this run, not the offsets the recreation lost.
        kafka_offset_reset_policy="earliest",
    )
    proc = start_flow(tmp_path, [], env, "run.log")
    try:
        db = tmp_path / "enriched.sqlite"
        wait_until(lambda: "e1" in event_ids(db), "e1 written", proc, tmp_path)
        kafka_process.recreate_topic("events", 3)
        status = proc.wait(timeout=60)
    finally:
        kill_group(proc)
    log = tail(tmp_path, "run.log")
    assert status != 0
    assert "Kafka topic 'events' had 2 partitions when the dataflow started and now has 3" in log
    assert "dataflow stopped:" in log


# 5. Quiet outages.


def test_silent_brokers_are_warned_about_and_their_return_logged(
    kafka_process: KafkaProcess, tmp_path: Path
) -> None:
    bootstrap = kafka_process.bootstrap
    kafka_process.create_topic("events", 1)
    kafka_process.create_topic("reference", 1)
    produce(bootstrap, "reference", [row("S1")])
    produce(bootstrap, "events", [event("before")])
    env = env_for(
        tmp_path,
        bootstrap,
        kafka_stop_at_end=False,
        kafka_metadata_check_seconds=0.3,
        kafka_quiet_warning_seconds=1,
    )
    proc = start_flow(tmp_path, [], env, "run.log")
    db = tmp_path / "enriched.sqlite"
    try:
        wait_until(lambda: "before" in event_ids(db), "the first row", proc, tmp_path)
        kafka_process.pause()
        try:
            wait_until(
                log_has(tmp_path, f"no Kafka broker of {bootstrap} has answered for"),
                "the warning",
                proc,
                tmp_path,
            )
        finally:
            kafka_process.resume()
        wait_until(
            log_has(tmp_path, f"Kafka brokers {bootstrap} answer again"), "back", proc, tmp_path
        )
        produce(bootstrap, "events", [event("after")])
        wait_until(lambda: "after" in event_ids(db), "the row after", proc, tmp_path)
    finally:
        kill_group(proc)


def test_the_watch_gauge_counts_the_silence_and_drops_to_zero(
    kafka_process: KafkaProcess, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    watch = ClusterWatch([kafka_process.bootstrap], {}, 0.5, 5, clock=lambda: now[0])
    gauge = metrics.KAFKA_UNANSWERED_SECONDS
    with caplog.at_level(logging.INFO, logger="enrich.kafka"):
        watch.check()
        assert gauge._value.get() == 0
        kafka_process.pause()
        try:
            now[0] += 3
            watch.check()
            assert gauge._value.get() == 3
            assert not caplog.records, "quiet for less than the warning time"
            now[0] += 4
            watch.check()
            assert gauge._value.get() == 7
            now[0] += 1
            watch.check()  # warned already: not again before ten quiet times
        finally:
            kafka_process.resume()
        watch.check()
    assert gauge._value.get() == 0
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert f"no Kafka broker of {kafka_process.bootstrap} has answered for 7 s" in messages[0]
    assert "answer again after" in messages[1]


# 7. Secrets in librdkafka's configuration errors.

SECRET = "S3cr3t-Mechanism-Value"


@pytest.mark.parametrize(
    "command", [ENTRY, DEMO_TO_KAFKA, PUBLISH], ids=["dataflow", "demo_to_kafka", "publisher"]
)
def test_a_refused_kafka_property_is_named_without_its_value(
    kafka: MockKafka, tmp_path: Path, command: list[str]
) -> None:
    kafka.produce("reference", [row("S1")], partition=0)
    kafka.produce("events", [event("e1")], partition=0)
    env = env_for(tmp_path, kafka.bootstrap)
    env["ENRICH_KAFKA_CONFIG"] = json.dumps(
        {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": SECRET}
    )
    env["ENRICH_PUBLISH_SQLITE_PATH"] = str(tmp_path / "reference.sqlite")
    done = run(command, env)
    assert done.returncode == 2, done.stderr[-2_000:]
    assert "ENRICH_KAFKA_CONFIG: librdkafka refused property 'sasl.mechanisms'" in done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


# 9. The metrics port already taken.


@pytest.fixture
def taken_port() -> Iterator[int]:
    with closing(socket.socket()) as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield sock.getsockname()[1]


def demo_env(work: Path, port: int, **settings: Any) -> dict[str, str]:
    env = flow_env(work, demo_events=200, demo_references=50, **settings)
    env.update(
        BYTEWAX_DATAFLOW_API_ENABLED="true",
        BYTEWAX_DATAFLOW_API_PORT=str(port),
        BYTEWAX_DATAFLOW_API_CACHE_PATH=str(work),
    )
    return env


def test_a_taken_metrics_port_refuses_start_up(tmp_path: Path, taken_port: int) -> None:
    done = run(ENTRY, demo_env(tmp_path, taken_port))
    assert done.returncode == 1
    assert f"the metrics port {taken_port} (BYTEWAX_DATAFLOW_API_PORT) is already in use" in (
        done.stderr
    )
    assert not event_ids(tmp_path / "enriched.sqlite")


def test_a_taken_metrics_port_is_one_clear_line_when_allowed(
    tmp_path: Path, taken_port: int
) -> None:
    done = run(ENTRY, demo_env(tmp_path, taken_port, metrics_port_in_use="warn"))
    assert done.returncode == 0, done.stderr[-2_000:]
    lines = [line for line in done.stderr.splitlines() if "is already in use" in line]
    assert len(lines) == 1, done.stderr[-2_000:]
    assert "running on without metrics" in lines[0]
    assert event_ids(tmp_path / "enriched.sqlite")


def test_a_free_metrics_port_says_nothing(tmp_path: Path) -> None:
    with suppress(OSError), closing(socket.socket()) as sock:
        sock.bind(("0.0.0.0", 0))
        port = sock.getsockname()[1]
    done = run(ENTRY, demo_env(tmp_path, port))
    assert done.returncode == 0, done.stderr[-2_000:]
    assert "already in use" not in done.stderr
