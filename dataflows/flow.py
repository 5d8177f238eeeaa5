"""Wires the enrichment dataflow from settings; all logic lives in the steps."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

from dataflows import database
from dataflows.settings import Settings
from operators import routing
from operators.decode import Decoder, decode_batch
from operators.enrich_step import builder
from operators.enrichment import EnrichConfig
from operators.records import CaughtUp, DeadLetter, Enriched, RawRecord
from sinks.dead_letter import dead_letter_file, to_line
from sinks.kafka_topics import dead_letter_message, enriched_messages, topic_sink
from sinks.table import EnrichedTable
from sinks.upsert import UpsertSink
from sources.demo import DemoConfig, DemoSource
from sources.kafka import EventSource, ReferenceSource
from telemetry.record import record_dead_letters, record_decoded, record_tally


def decoder(settings: Settings) -> Decoder:
    return Decoder(
        lookup_field=settings.lookup_field,
        event_id_field=settings.event_id_field,
        event_time_field=settings.event_time_field,
        event_fields=settings.event_fields,
        reference_columns=settings.reference_columns,
        reference_version_field=settings.reference_version_field,
        max_record_bytes=settings.max_record_bytes,
    )


def enrich_config(settings: Settings) -> EnrichConfig:
    return EnrichConfig(
        timeout_seconds=settings.miss_timeout_seconds,
        miss_policy=settings.miss_policy,
        join_type=settings.join_type,
        defaults=settings.defaults_row(),
        max_pending_per_key=settings.max_pending_per_key,
        max_pending_per_shard=settings.max_pending_per_shard,
        wait_for_reference=settings.source == "kafka",
    )


def table(settings: Settings) -> EnrichedTable:
    return EnrichedTable(
        name=settings.table,
        event_columns=tuple(settings.event_fields.items()),
        reference_columns=tuple(settings.reference_columns.items()),
        unstored_fields=frozenset(
            {settings.lookup_field, settings.event_id_field, settings.event_time_field}
        ),
    )


def demo_source(settings: Settings) -> DemoSource:
    return DemoSource(
        DemoConfig(
            events=settings.demo_events,
            references=settings.demo_references,
            seed=settings.demo_seed,
            partitions=settings.demo_partitions,
            batch_size=settings.demo_batch_size,
            rate=settings.demo_rate,
        )
    )


def kafka_sources(settings: Settings) -> dict[str, Source[Any]]:
    """The events topic and the reference topic, by the step id that reads each."""
    config = settings.kafka_client_config()
    return {
        "events_in": EventSource(
            settings.kafka_brokers,
            settings.kafka_events_topic,
            config,
            settings.kafka_batch_size,
            settings.kafka_stop_at_end,
            start=OFFSET_BEGINNING if settings.kafka_events_start == "earliest" else OFFSET_END,
        ),
        "reference_in": ReferenceSource(
            settings.kafka_brokers,
            settings.kafka_reference_topic,
            config,
            settings.kafka_batch_size,
            settings.kafka_stop_at_end,
        ),
    }


def sources(settings: Settings) -> dict[str, Source[Any]]:
    """Every input of the configured source, by the step id that reads it."""
    if settings.source == "kafka":
        return kafka_sources(settings)
    return {"input": demo_source(settings)}


def main_sink(settings: Settings) -> UpsertSink:
    return UpsertSink(
        database.dialect(settings),
        table(settings),
        settings.sink_partitions,
        settings.sink_batch_size,
        dead_letters=database.dead_letter_table(settings),
        policy=database.retry_policy(settings),
    )


def write_dead_letters(
    settings: Settings, dead: Stream[DeadLetter], override: Sink[Any] | None
) -> None:
    """To the dead-letter topic when one is set, else to the JSON-lines file."""
    if override is None and settings.dead_letter_topic:
        messages = op.map("dead_letter_messages", dead, dead_letter_message)
        producer = topic_sink(
            settings.kafka_brokers, settings.dead_letter_topic, settings.kafka_client_config()
        )
        op.output("dead_letter_out", messages, producer)
        return
    lines = op.map("format_dead_letters", dead, lambda letter: ("dead_letters", to_line(letter)))
    op.output("dead_letter_out", lines, override or dead_letter_file(settings.dead_letter_path))


def write_enriched_topic(settings: Settings, enriched: Stream[tuple[str, list[Any]]]) -> None:
    """The optional second sink: every enriched record, keyed by lookup id."""
    if not settings.enriched_topic:
        return
    message = enriched_messages(table(settings))
    records = op.flat_map_batch(
        "enriched_messages",
        enriched,
        lambda batch: [message(rec) for _, out in batch for rec in out if type(rec) is Enriched],
    )
    producer = topic_sink(
        settings.kafka_brokers, settings.enriched_topic, settings.kafka_client_config()
    )
    op.output("enriched_out", records, producer)


def build_flow(
    settings: Settings,
    inputs: Mapping[str, Source[Any]] | None = None,
    sink: Sink[Any] | None = None,
    dead_letter_sink: Sink[Any] | None = None,
) -> Dataflow:
    """The dataflow; tests and benchmarks may swap the inputs or sinks, nothing else."""
    check = decoder(settings)
    shard_names = routing.names(settings.shards)
    partition_names = routing.names(settings.sink_partitions)

    def decode_and_route(batch: list[RawRecord | CaughtUp]) -> Iterable[Any]:
        decoded = decode_batch(check, batch)
        record_decoded(decoded, len(batch))
        return [*routing.by_shard(decoded.good, shard_names, decoded.caught_up), *decoded.bad]

    def route_to_sink(batch: list[tuple[str, list[Any]]]) -> Iterable[Any]:
        groups, dead = routing.by_partition((outputs for _, outputs in batch), partition_names)
        return [*groups, *dead]

    def counted(letter: DeadLetter) -> DeadLetter:
        record_dead_letters((letter,))
        return letter

    flow = Dataflow("enrich")
    streams = [op.input(name, flow, src) for name, src in (inputs or sources(settings)).items()]
    raw = streams[0] if len(streams) == 1 else op.merge("raw", *streams)
    decoded = op.flat_map_batch("decode", raw, decode_and_route)
    checked = op.branch("split_invalid", decoded, lambda item: type(item) is tuple)
    enriched = op.stateful_batch(
        "enrich", checked.trues, builder(enrich_config(settings), time.time, record_tally)
    )
    routed = op.flat_map_batch("route", enriched, route_to_sink)
    outputs = op.branch("split_dead_letters", routed, lambda item: type(item) is tuple)
    op.output("sink", outputs.trues, sink or main_sink(settings))
    dead = op.merge("dead_letters", checked.falses, outputs.falses)
    write_dead_letters(settings, op.map("count_dead_letters", dead, counted), dead_letter_sink)
    write_enriched_topic(settings, enriched)
    return flow
