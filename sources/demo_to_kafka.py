"""Produce the demo data set into the configured Kafka topics.

`python -m sources.demo_to_kafka` with the same `ENRICH_*` settings as the
dataflow (brokers, topic names, `ENRICH_DEMO_*` sizes) fills the events topic
and each lookup's reference topic, so the Kafka path can be tried on a real cluster
with one more command: the dataflow itself with `ENRICH_SOURCE=kafka`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import KafkaException, Producer

from dataflows.flow import demo_source
from dataflows.settings import Settings, SettingsError, load_settings
from operators.records import Kind, RawRecord


@dataclass(frozen=True)
class Produced:
    events: int
    references: int


def _demo_records(settings: Settings) -> Iterator[RawRecord]:
    """Every record the demo source serves, each partition in its planned order."""
    source = demo_source(settings)
    for name in source.list_parts():
        partition = source.build_part("demo_to_kafka", name, None)
        while True:
            try:
                batch = partition.next_batch()
            except StopIteration:
                break
            yield from (raw for raw in batch if type(raw) is RawRecord)


def produce_demo(settings: Settings) -> Produced:
    """Every planned record, keyed by lookup id: events to the events topic, each
    lookup's reference rows to that lookup's topic."""
    producer = Producer(
        {
            "bootstrap.servers": ",".join(settings.kafka_brokers),
            "enable.idempotence": "true",
            "linger.ms": "50",
            **settings.kafka_client_config(),
        }
    )
    failures: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    topics = {lookup.name: lookup.topic for lookup in settings.lookups}
    events = references = 0
    for raw in _demo_records(settings):
        is_event = raw.kind is Kind.EVENT
        topic = settings.kafka_events_topic if is_event else topics[raw.lookup]
        while True:
            try:
                producer.produce(topic, raw.value, raw.key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        events += is_event
        references += not is_event
        producer.poll(0)
    producer.flush()
    if failures:
        raise KafkaException(f"{len(failures)} records were not delivered: {failures[0]}")
    return Produced(events, references)


def main() -> None:
    try:
        settings = load_settings()
        if not settings.kafka_brokers:
            raise SettingsError("invalid settings:\n  ENRICH_KAFKA_BROKERS: no broker given")
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    produced = produce_demo(settings)
    topics = ", ".join(repr(lookup.topic) for lookup in settings.lookups)
    print(
        f"produced {produced.events} events to {settings.kafka_events_topic!r} and "
        f"{produced.references} reference records to {topics}"
    )


if __name__ == "__main__":
    main()
