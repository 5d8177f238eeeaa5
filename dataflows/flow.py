"""Wires the enrichment dataflow from settings; all logic lives in the steps."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import Sink

from dataflows.settings import Settings
from operators import routing
from operators.decode import Decoder, decode_batch
from operators.enrich_step import builder
from operators.enrichment import EnrichConfig
from operators.records import DeadLetter, RawRecord
from sinks.dead_letter import dead_letter_file, to_line
from sinks.dialect import SqliteDialect
from sinks.table import EnrichedTable
from sinks.upsert import UpsertSink
from sources.demo import DemoConfig, DemoSource
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


def main_sink(settings: Settings) -> UpsertSink:
    return UpsertSink(
        SqliteDialect(settings.sqlite_path),
        table(settings),
        settings.sink_partitions,
        settings.sink_batch_size,
    )


def build_flow(
    settings: Settings,
    source: Any = None,
    sink: Sink[Any] | None = None,
    dead_letter_sink: Sink[Any] | None = None,
) -> Dataflow:
    """The dataflow; tests may swap the source or sinks, nothing else."""
    check = decoder(settings)
    shard_names = routing.names(settings.shards)
    partition_names = routing.names(settings.sink_partitions)

    def decode_and_route(batch: list[RawRecord]) -> Iterable[Any]:
        decoded = decode_batch(check, batch)
        record_decoded(decoded, len(batch))
        return [*routing.by_shard(decoded.good, shard_names), *decoded.bad]

    def route_to_sink(batch: list[tuple[str, list[Any]]]) -> Iterable[Any]:
        groups, dead = routing.by_partition((outputs for _, outputs in batch), partition_names)
        return [*groups, *dead]

    def dead_letter_line(letter: DeadLetter) -> tuple[str, str]:
        record_dead_letters((letter,))
        return "dead_letters", to_line(letter)

    flow = Dataflow("enrich")
    raw = op.input("input", flow, source or demo_source(settings))
    decoded = op.flat_map_batch("decode", raw, decode_and_route)
    checked = op.branch("split_invalid", decoded, lambda item: type(item) is tuple)
    enriched = op.stateful_batch(
        "enrich", checked.trues, builder(enrich_config(settings), time.time, record_tally)
    )
    routed = op.flat_map_batch("route", enriched, route_to_sink)
    outputs = op.branch("split_dead_letters", routed, lambda item: type(item) is tuple)
    op.output("sink", outputs.trues, sink or main_sink(settings))
    dead = op.merge("dead_letters", checked.falses, outputs.falses)
    lines = op.map("format_dead_letters", dead, dead_letter_line)
    op.output(
        "dead_letter_out", lines, dead_letter_sink or dead_letter_file(settings.dead_letter_path)
    )
    return flow
