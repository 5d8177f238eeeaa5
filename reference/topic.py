"""The keys the reference topic holds a live row for: what a full load must tombstone if gone.

Read from the beginning of every partition to the end it had when reading
started; the latest record of a key wins, so this is right whether or not
the topic has been compacted yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from sources.kafka import consumer_config

_METADATA_TIMEOUT_SECONDS = 30.0
_POLL_SECONDS = 0.05
"""A consume returns after this long even with fewer messages than asked for: the last
one before every partition's end waits it out, so it bounds the tail of a read."""
_BATCH = 10_000


def live_keys(brokers: Iterable[str], topic: str, config: Mapping[str, str]) -> set[bytes]:
    """Keys whose latest record is a value, not a tombstone; empty when the topic does not exist.

    Any other metadata error is raised: an empty set would tombstone nothing,
    but a wrong one could tombstone live rows.
    """
    consumer = Consumer(consumer_config(brokers, config, end_events=True))
    try:
        metadata = consumer.list_topics(topic, timeout=_METADATA_TIMEOUT_SECONDS).topics[topic]
        if metadata.error is not None:
            if metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return set()
            raise KafkaException(metadata.error)
        partitions = list(metadata.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        live: set[bytes] = set()
        ended: set[int | None] = set()  # librdkafka types the partition as optional
        while len(ended) < len(partitions):
            for msg in consumer.consume(_BATCH, _POLL_SECONDS):
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(error)
                    ended.add(msg.partition())
                    continue
                key = msg.key()
                if key is None:
                    continue
                if msg.value() is None:
                    live.discard(key)
                else:
                    live.add(key)
        return live
    finally:
        consumer.close()
