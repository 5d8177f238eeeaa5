"""A Kafka producer whose sends are confirmed before anyone relies on them.

Used where a program must know that every record reached the cluster before
it moves on (the demo loader, the reference publisher's watermark): `send`
queues, `confirm` waits for every delivery report and raises if any record
failed. The producer is idempotent with `acks=all`, so librdkafka's own
retries neither duplicate nor reorder records within a partition; settings
from `ENRICH_KAFKA_CONFIG` cannot turn that off.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from telemetry.kafka_logs import logged

_FULL_QUEUE_WAIT_SECONDS = 0.1


class DeliveryFailed(KafkaException):
    """Some records were not delivered; the message counts them and quotes the first error."""


class ConfirmedProducer:
    """Sends records and confirms their delivery."""

    def __init__(
        self, brokers: Iterable[str], config: Mapping[str, str], linger_ms: int = 50
    ) -> None:
        self._producer = Producer(
            logged(
                {
                    "bootstrap.servers": ",".join(brokers),
                    "linger.ms": str(linger_ms),
                    **config,
                    "enable.idempotence": "true",
                    "acks": "all",
                }
            )
        )
        self._failures: list[KafkaError] = []

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failures.append(err)

    def send(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Queue one record; waits for room when librdkafka's queue is full."""
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self._delivered)
                break
            except BufferError:
                self._producer.poll(_FULL_QUEUE_WAIT_SECONDS)
        self._producer.poll(0)

    def confirm(self) -> None:
        """Wait until every record sent so far is delivered, or raise `DeliveryFailed`.

        librdkafka reports each record once, delivered or failed, within
        `message.timeout.ms`, so the flush ends without a timeout of its own.
        """
        self._producer.flush()
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryFailed(
                f"{len(failures)} records were not delivered; first error: {failures[0]}"
            )
