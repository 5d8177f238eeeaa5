"""Produce the demo data set into the configured Kafka topics.

`enrich demo-to-kafka` with the same `ENRICH_*` settings as the
dataflow (brokers, topic names, `ENRICH_DEMO_*` sizes) fills the events topic
and each lookup's reference topic, so the Kafka path can be tried on a real cluster
with one more command: the dataflow itself with `ENRICH_SOURCE=kafka`. Unreachable
brokers end it within `ENRICH_KAFKA_START_TIMEOUT_SECONDS` (exit 1).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from config.base import SettingsError, exit_on_bad_settings
from dataflows.flow import demo_source
from dataflows.settings import Settings, load_settings
from operators.records import Kind, RawRecord
from sinks.kafka_producer import ConfirmedProducer
from sources.kafka_admin import config_checked, list_cluster
from sources.kafka_errors import exit_on_kafka_fault


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
    topics = reference_topics(settings)
    config = settings.kafka_client_config()
    with config_checked(config):
        producer = ConfirmedProducer(settings.kafka_brokers, config)
    events = references = 0
    for raw in _demo_records(settings):
        is_event = raw.kind is Kind.EVENT
        topic = settings.kafka_events_topic if is_event else topics[raw.lookup]
        producer.send(topic, raw.key, raw.value)
        events += is_event
        references += not is_event
    producer.confirm()
    return Produced(events, references)


def reference_topics(settings: Settings) -> dict[str, str]:
    """The topic of each lookup the demo makes rows for, or SettingsError naming one without."""
    topics = {}
    for lookup in settings.lookups:
        if lookup.file is None and lookup.demo_table is not None:
            if lookup.topic is None:
                raise SettingsError(
                    f"invalid settings:\n  ENRICH_LOOKUPS: lookup {lookup.name!r} gets demo rows "
                    'but names no topic to produce them to; give it a "topic"'
                )
            topics[lookup.name] = lookup.topic
    return topics


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="enrich demo-to-kafka",
        description="Produce the demo's events and each lookup's reference rows to their topics.",
    ).parse_args(argv)
    with exit_on_bad_settings():
        settings = load_settings()
        if not settings.kafka_brokers:
            raise SettingsError("invalid settings:\n  ENRICH_KAFKA_BROKERS: no broker given")
        reference_topics(settings)
    with exit_on_kafka_fault("interrupted; some demo records may have been produced"):
        list_cluster(
            settings.kafka_brokers,
            settings.kafka_client_config(),
            settings.kafka_start_timeout_seconds,
        )
        produced = produce_demo(settings)
    topics = ", ".join(map(repr, reference_topics(settings).values()))
    print(
        f"produced {produced.events} events to {settings.kafka_events_topic!r} and "
        f"{produced.references} reference records to {topics}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
