"""The Kafka of the test suite: librdkafka's mock cluster, spoken to over real sockets."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition


@dataclass
class MockKafka:
    """A running mock cluster and the bootstrap address any client can dial.

    Topics are created on first use with four partitions; records produced
    through `produce` are flushed before it returns.
    """

    bootstrap: str
    owner: Producer
    _producer: Producer = field(init=False)

    def __post_init__(self) -> None:
        self._producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": "5"})

    def produce(
        self,
        topic: str,
        records: list[tuple[bytes | None, bytes | None]],
        partition: int | None = None,
        timestamp_ms: int = 0,
    ) -> None:
        """Produce `records`; `timestamp_ms` 0 lets the producer stamp them with now."""
        for key, value in records:
            if partition is None:
                self._producer.produce(topic, value, key, timestamp=timestamp_ms)
            else:
                self._producer.produce(
                    topic, value, key, partition=partition, timestamp=timestamp_ms
                )
            self._producer.poll(0)
        assert self._producer.flush(10) == 0, "the mock cluster did not take every record"

    def consume_all(self, topic: str) -> list[Message]:
        """Every record now in `topic`, all partitions, oldest first per partition."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"test-{uuid.uuid4()}",
                "enable.partition.eof": "true",
                "enable.auto.commit": "false",
            }
        )
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages: list[Message] = []
        ended: set[int] = set()
        while len(ended) < len(partitions):
            msg = consumer.poll(10)
            assert msg is not None, f"no end of partition seen on {topic!r}"
            if msg.error() is None:
                messages.append(msg)
            else:
                ended.add(msg.partition())
        consumer.close()
        return messages


@pytest.fixture
def kafka() -> Iterator[MockKafka]:
    owner = Producer({"test.mock.num.brokers": 1})
    brokers = owner.list_topics(timeout=10).brokers.values()
    yield MockKafka(",".join(f"{b.host}:{b.port}" for b in brokers), owner)
    owner.flush(1)
