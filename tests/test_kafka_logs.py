"""librdkafka's own log lines go through Python logging (`telemetry.kafka_logs`).

Before, they went straight to stderr (`%3|...|FAIL|rdkafka#consumer-1| ...`):
plain text among the JSON lines a log collector was promised, and past the
formatter that scrubs secret values. A refused connection is the simplest
thing that makes librdkafka log.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition

from sinks.kafka_producer import ConfirmedProducer
from sources.kafka import consumer_config
from telemetry.kafka_logs import KAFKA_LOG


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    KAFKA_LOG.addHandler(handler)
    try:
        yield handler
    finally:
        KAFKA_LOG.removeHandler(handler)


@pytest.fixture
def refused_port() -> int:
    """A loopback port nothing listens on: bound, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _refused(lines: Lines) -> bool:
    return any("refused" in record.getMessage().lower() for record in lines.records)


def test_a_consumers_connection_errors_are_log_records_not_raw_stderr(
    lines: Lines, refused_port: int, capfd: pytest.CaptureFixture[str]
) -> None:
    consumer = Consumer(consumer_config([f"127.0.0.1:{refused_port}"], {}, end_events=True))
    consumer.assign([TopicPartition("events", 0, 0)])
    deadline = time.monotonic() + 10
    while not _refused(lines) and time.monotonic() < deadline:
        consumer.consume(10, 0.2)  # serves the log queue
    consumer.close()
    assert _refused(lines), [record.getMessage() for record in lines.records]
    refusals = [record for record in lines.records if "refused" in record.getMessage().lower()]
    assert all(record.levelno >= logging.WARNING for record in refusals)
    assert "|FAIL|rdkafka" not in capfd.readouterr().err


def test_a_producers_connection_errors_are_log_records_not_raw_stderr(
    lines: Lines, refused_port: int, capfd: pytest.CaptureFixture[str]
) -> None:
    producer = ConfirmedProducer([f"127.0.0.1:{refused_port}"], {"message.timeout.ms": "1500"})
    producer.send("events", b"k", b"v")
    with pytest.raises(Exception, match="not delivered"):
        producer.confirm()
    assert _refused(lines), [record.getMessage() for record in lines.records]
    assert "|FAIL|rdkafka" not in capfd.readouterr().err
