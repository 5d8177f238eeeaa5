"""The events topic and the reference topic, read through Bytewax's Kafka connector.

Both deliver `RawRecord`s whose origin is `kafka/topic/partition/offset`, so
a dead letter points back at its message and an event without an id gets one
that is the same on every replay.

- Events resume from the offsets in the recovery store, as Bytewax's
  `KafkaSource` does.
- The reference topic is where rows live (the join keeps none in its
  snapshots), so every start re-reads it from the beginning. Records before
  the snapshotted offset are marked `replay`: they rebuild rows without
  releasing or dead-lettering anything twice. When a partition reaches the end
  it saw at start it sends `CaughtUp`, telling the join its rows are complete.
  Bytewax's partition has no such signal, so this one is built on
  confluent-kafka directly, with librdkafka's end-of-partition event as the
  signal: unlike comparing offsets with the high watermark it also holds for
  compacted topics and transaction markers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bytewax.connectors.kafka import KafkaSource
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from operators.records import CaughtUp, Kind, RawRecord

_POLL_SECONDS = 0.001
"""How long one poll waits for messages; Bytewax's own Kafka partition uses the same."""


def origin(topic: str, partition: int, offset: int) -> str:
    return f"kafka/{topic}/{partition}/{offset}"


def parse_origin(text: str) -> tuple[str, int, int] | None:
    """Topic, partition and offset of a Kafka origin; None for other sources."""
    source, _, rest = text.partition("/")
    topic, _, position = rest.rpartition("/")
    topic, _, partition = topic.rpartition("/")
    if source != "kafka" or not topic or not partition.isdigit() or not position.isdigit():
        return None
    return topic, int(partition), int(position)


class _EventPartition(StatefulSourcePartition[RawRecord, Any]):
    """Bytewax's Kafka partition, its messages as raw event records."""

    def __init__(self, inner: StatefulSourcePartition[Any, Any]) -> None:
        self._inner = inner

    def next_batch(self) -> list[RawRecord]:
        event = Kind.EVENT
        return [
            RawRecord(event, msg.key, msg.value, origin(msg.topic, msg.partition, msg.offset))
            for msg in self._inner.next_batch()
        ]

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class EventSource(KafkaSource):
    """The events topic: one Bytewax partition per Kafka partition, resumed by offset."""

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _EventPartition:  # type: ignore[override]
        return _EventPartition(super().build_part(step_id, for_part, resume_state))


class _ReferencePartition(StatefulSourcePartition[RawRecord | CaughtUp, int]):
    """Reads one reference partition from its beginning, every time.

    The snapshot is the offset reached, never lower than the one resumed
    from, so a crash while re-reading keeps the boundary between replayed
    and new records.
    """

    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        index: int,
        partitions: int,
        resume_offset: int,
        batch_size: int,
        stop_at_end: bool,
    ) -> None:
        self._consumer = consumer
        self._topic = topic
        self._index = index
        self._partitions = partitions
        self._replay_below = resume_offset
        self._next = resume_offset
        self._batch_size = batch_size
        self._stop_at_end = stop_at_end
        self._caught_up = False
        self._done = False
        consumer.assign([TopicPartition(topic, index, OFFSET_BEGINNING)])

    def next_batch(self) -> list[RawRecord | CaughtUp]:
        if self._done:
            raise StopIteration
        batch: list[RawRecord | CaughtUp] = []
        reference = Kind.REFERENCE
        topic = self._topic
        for msg in self._consumer.consume(self._batch_size, _POLL_SECONDS):
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
                if not self._caught_up:
                    self._caught_up = True
                    batch.append(CaughtUp(f"{topic}/{self._index}", self._partitions))
                if self._stop_at_end:
                    self._done = True
                    break
                continue
            offset = msg.offset()
            batch.append(
                RawRecord(
                    reference,
                    msg.key(),
                    msg.value(),
                    origin(topic, self._index, offset),
                    offset < self._replay_below,
                )
            )
            self._next = offset + 1
        return batch

    def snapshot(self) -> int:
        return max(self._next, self._replay_below)

    def close(self) -> None:
        self._consumer.close()


class ReferenceSource(FixedPartitionedSource[RawRecord | CaughtUp, int]):
    """The compacted reference topic, re-read from its beginning on every start."""

    def __init__(
        self,
        brokers: Iterable[str],
        topic: str,
        config: Mapping[str, str],
        batch_size: int,
        stop_at_end: bool,
    ) -> None:
        self._brokers = list(brokers)
        self._topic = topic
        self._config = dict(config)
        self._batch_size = batch_size
        self._stop_at_end = stop_at_end

    def _listing(self) -> KafkaSource:
        return KafkaSource(self._brokers, [self._topic], add_config=self._config)

    def list_parts(self) -> list[str]:
        return self._listing().list_parts()

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _ReferencePartition:
        index, _, topic = for_part.partition("-")
        consumer = Consumer(
            {
                "bootstrap.servers": ",".join(self._brokers),
                "group.id": "enrich-reference-unused",
                "enable.auto.commit": "false",
                "enable.partition.eof": "true",
                **self._config,
            }
        )
        return _ReferencePartition(
            consumer,
            topic,
            int(index),
            len(self.list_parts()),
            resume_state or 0,
            self._batch_size,
            self._stop_at_end,
        )
