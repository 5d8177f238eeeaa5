"""Each record the Kafka sources read carries its Kafka timestamp, over real sockets.

Event-time timeouts, row TTL and as-of lookups with `valid_from: record_time`
take a record's time from `RawRecord.timestamp`; these tests produce records
with explicit timestamps to the mock cluster and read them back through the
sources' own partitions.
"""

from __future__ import annotations

from confluent_kafka import Producer
from conftest import MockKafka

from operators.records import Kind, RawRecord
from sources.kafka import EventSource, ReferenceSource

STAMPS_MS = [1_700_000_000_123, 1_700_000_060_000, 1]
"""Milliseconds since the epoch, one with a fraction of a second, and one just after the
epoch (a real timestamp, not a missing one; a producer's 0 means "now")."""


def produce_stamped(kafka: MockKafka, topic: str, stamps: list[int]) -> None:
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    for i, ms in enumerate(stamps):
        producer.produce(topic, b'{"v": %d}' % i, b"K%d" % i, partition=0, timestamp=ms)
    assert producer.flush(10) == 0


def read_partition_0(source: EventSource | ReferenceSource, topic: str) -> list[RawRecord]:
    """Every record of partition 0, read by the source's partition until it stops at the end."""
    part = source.build_part(topic, f"0-{topic}", None)
    records: list[RawRecord] = []
    try:
        while True:
            records.extend(item for item in part.next_batch() if isinstance(item, RawRecord))
    except StopIteration:
        pass
    finally:
        part.close()
    return records


def test_event_records_carry_the_kafka_timestamp_in_epoch_seconds(kafka: MockKafka) -> None:
    produce_stamped(kafka, "events", STAMPS_MS)
    records = read_partition_0(EventSource([kafka.bootstrap], "events", {}, 100, True), "events")
    assert [r.kind for r in records] == [Kind.EVENT] * 3
    assert [r.timestamp for r in records] == [1_700_000_000.123, 1_700_000_060.0, 0.001]
    assert [r.origin for r in records] == [f"kafka/events/0/{i}" for i in range(3)]


def test_reference_records_carry_the_kafka_timestamp_in_epoch_seconds(kafka: MockKafka) -> None:
    produce_stamped(kafka, "reference", STAMPS_MS[:2])
    source = ReferenceSource([kafka.bootstrap], "reference", {}, 100, True, lookup="security")
    records = read_partition_0(source, "reference")
    assert [(r.kind, r.lookup) for r in records] == [(Kind.REFERENCE, "security")] * 2
    assert [r.timestamp for r in records] == [1_700_000_000.123, 1_700_000_060.0]


def test_a_record_without_a_timestamp_has_none(kafka: MockKafka) -> None:
    """A producer speaking the pre-0.10 message format (v0) writes no timestamp, and the
    mock cluster serves the record as written: librdkafka reports TIMESTAMP_NOT_AVAILABLE
    with 0 ms, which must not read as the epoch."""
    produce_stamped(kafka, "events", [1_700_000_000_123])
    old = Producer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "api.version.request": "false",
            "broker.version.fallback": "0.9.0",
        }
    )
    old.produce("events", b'{"v": 1}', b"K1", partition=0)
    assert old.flush(10) == 0
    records = read_partition_0(EventSource([kafka.bootstrap], "events", {}, 100, True), "events")
    assert [r.timestamp for r in records] == [1_700_000_000.123, None]
