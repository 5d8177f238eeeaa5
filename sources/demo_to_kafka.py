"""Produce the demo data set into the configured Kafka topics.

`python -m sources.demo_to_kafka` with the same `ENRICH_*` settings as the
dataflow (brokers, topic names, `ENRICH_DEMO_*` sizes) fills the events topic
and the reference topic, so the Kafka path can be tried on a real cluster
with one more command: the dataflow itself with `ENRICH_SOURCE=kafka`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from dataflows.flow import demo_source
from dataflows.settings import Settings, SettingsError, load_settings
from operators.records import Kind
from sinks.kafka_producer import ConfirmedProducer
from sources.demo import build_plan


@dataclass(frozen=True)
class Produced:
    events: int
    references: int


def produce_demo(settings: Settings) -> Produced:
    """Every planned record, each partition in its planned order, keyed by lookup id."""
    plan = build_plan(demo_source(settings).cfg)
    producer = ConfirmedProducer(settings.kafka_brokers, settings.kafka_client_config())
    topics = {
        Kind.EVENT: settings.kafka_events_topic,
        Kind.REFERENCE: settings.kafka_reference_topic,
    }
    counts = {Kind.EVENT: 0, Kind.REFERENCE: 0}
    for partition in plan.partitions:
        for kind, key, value in partition:
            producer.send(topics[kind], key, value)
            counts[kind] += 1
    producer.confirm()
    return Produced(counts[Kind.EVENT], counts[Kind.REFERENCE])


def main() -> None:
    try:
        settings = load_settings()
        if not settings.kafka_brokers:
            raise SettingsError("invalid settings:\n  ENRICH_KAFKA_BROKERS: no broker given")
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    produced = produce_demo(settings)
    print(
        f"produced {produced.events} events to {settings.kafka_events_topic!r} and "
        f"{produced.references} reference records to {settings.kafka_reference_topic!r}"
    )


if __name__ == "__main__":
    main()
