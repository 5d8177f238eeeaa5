"""What the dataflow checks before it builds anything: Kafka reachable, configured and
holding every topic read; the metrics port free.

Run by the entry point so a fault at start is one message and an exit status
(`sources/kafka_errors.py`), not a hang, a traceback or a run without metrics.
"""

from __future__ import annotations

import logging
import os
import sys

from confluent_kafka import Consumer

from dataflows.settings import Settings
from sources.kafka import consumer_config
from sources.kafka_admin import config_checked, list_cluster, require_topics
from sources.kafka_errors import exit_on_kafka_fault
from telemetry.api_port import port_message, taken_api_port

log = logging.getLogger("enrich")


def topics_read(settings: Settings) -> dict[str, str]:
    """Every topic the dataflow reads, with the setting that names it."""
    if settings.source != "kafka":
        return {}
    topics = {settings.kafka_events_topic: "ENRICH_KAFKA_EVENTS_TOPIC"}
    for lookup in settings.lookups:
        if lookup.file is None and lookup.topic is not None:
            topics[lookup.topic] = f"ENRICH_LOOKUPS, lookup {lookup.name!r}"
    return topics


def check_kafka(settings: Settings) -> dict[str, int]:
    """Raise a `KafkaFault` unless every Kafka client can be built, a broker answers and
    every topic read exists; the cluster's topics with their partition counts (empty when
    the dataflow uses no Kafka), which the event clock's watermark needs."""
    uses_kafka = settings.source == "kafka" or settings.dead_letter_topic or settings.enriched_topic
    if not uses_kafka:
        return {}
    config = settings.kafka_client_config()
    if settings.source == "kafka":
        # A consumer may refuse what an admin client takes (consumer-only properties).
        with config_checked(config):
            Consumer(consumer_config(settings.kafka_brokers, config, end_events=True)).close()
    listing = list_cluster(settings.kafka_brokers, config, settings.kafka_start_timeout_seconds)
    require_topics(listing, topics_read(settings))
    return listing


def check_metrics_port(settings: Settings) -> None:
    """Refuse (exit 1), or warn once under `ENRICH_METRICS_PORT_IN_USE=warn`, when the
    API port is taken."""
    taken = taken_api_port(os.environ)
    if taken is None:
        return
    if settings.metrics_port_in_use == "refuse":
        print(f"{port_message(taken)} (or set ENRICH_METRICS_PORT_IN_USE=warn)", file=sys.stderr)
        raise SystemExit(1)
    log.error("%s; running on without metrics", port_message(taken))


def check_start(settings: Settings) -> int | None:
    """Every check, each fault turned into its message on stderr and its exit status;
    Ctrl-C while waiting for brokers exits 130. Returns the events topic's partition
    count when the events come from Kafka."""
    with exit_on_kafka_fault("interrupted while asking Kafka whether the dataflow can start"):
        listing = check_kafka(settings)
    check_metrics_port(settings)
    return listing.get(settings.kafka_events_topic) if settings.source == "kafka" else None
