"""Wires the enrichment dataflow from settings; all logic lives in the steps."""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

from config.lookups import Lookup
from dataflows import database
from dataflows.settings import Settings
from operators import routing, steps
from operators.arrival import ArrivalNumbers
from operators.chain import Stage
from operators.decode import Decoder
from operators.enrich_step import join_builder, segment_builder
from operators.enrichment import EnrichConfig
from operators.filters import all_of
from operators.lookup_steps import join_step, park_step
from operators.records import DeadLetter
from sinks.dead_letter import dead_letter_file, to_line
from sinks.kafka_topics import dead_letter_message, enriched_messages, topic_sink
from sinks.table import EnrichedTable
from sinks.upsert import OnCommit, UpsertSink
from sources.demo import DemoConfig, DemoSource
from sources.kafka import EventSource, ReferenceSource
from sources.kafka_faults import FaultSettings
from sources.reference_file import ReferenceFileSource
from telemetry.record import counted, record_decoded, record_tally


def decoder(settings: Settings) -> Decoder:
    return Decoder(
        lookup_field=settings.lookup_field,
        event_id_field=settings.event_id_field,
        event_time_field=settings.event_time_field,
        event_fields=settings.event_fields,
        references={lookup.name: lookup.reference_schema() for lookup in settings.lookups},
        max_record_bytes=settings.max_record_bytes,
        keep_event=all_of(settings.event_filter),
    )


def waits_for_reference(settings: Settings, lookup: Lookup) -> bool:
    """Whether the lookup's rows come apart from the events, so a start must wait for them.

    Only the demo's securities share partitions with the events, in planned
    order; every other reference source is re-read beside the events.
    """
    return not (
        settings.source == "demo" and lookup.file is None and lookup.demo_table == "securities"
    )


def enrich_config(settings: Settings, lookup: Lookup) -> EnrichConfig:
    return EnrichConfig(
        timeout_seconds=lookup.miss_timeout_seconds or settings.miss_timeout_seconds,
        miss_policy=lookup.miss_policy or settings.miss_policy,
        join_type=lookup.join_type or settings.join_type,
        defaults=lookup.defaults_row(),
        max_pending_per_key=settings.max_pending_per_key,
        max_pending_per_shard=settings.max_pending_per_shard,
        max_pending_bytes_per_shard=int(
            settings.max_pending_mb * 1_000_000 / (settings.shards * len(settings.lookups))
        ),
        wait_for_reference=waits_for_reference(settings, lookup),
        shards=settings.shards,
        clock=settings.clock_of(lookup),
        lateness_seconds=settings.event_time_lateness_seconds,
        idle_seconds=settings.event_time_idle_seconds,
        mode=lookup.mode,
        history_seconds=lookup.history_seconds,
        history_versions=lookup.history_versions,
        row_ttl_seconds=lookup.row_ttl_seconds,
    )


def partition_count(settings: Settings, kafka: int | None = None) -> int:
    """How many partitions carry events: the demo's, or the events topic's count the
    start checks found (`kafka`); 0 when unknown, and the watermark's start rule
    waits for partitions instead (`operators.event_clock`)."""
    if settings.source == "demo":
        return settings.demo_partitions
    return kafka or 0


def table(settings: Settings) -> EnrichedTable:
    return EnrichedTable(
        name=settings.table,
        event_columns=tuple(settings.event_fields.items()),
        reference_columns=tuple(settings.reference_columns().items()),
        unstored_fields=frozenset(
            {settings.lookup_field, settings.event_id_field, settings.event_time_field}
        ),
        keep_fields=bool(settings.enriched_topic),
        lookup_index=settings.sink_lookup_index,
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
        ),
        {
            lookup.demo_table: lookup.name
            for lookup in settings.lookups
            if lookup.file is None and lookup.demo_table is not None
        },
    )


def fault_settings(settings: Settings) -> FaultSettings:
    return FaultSettings(
        start_timeout_seconds=settings.kafka_start_timeout_seconds,
        offset_reset_policy=settings.kafka_offset_reset_policy,
        metadata_check_seconds=settings.kafka_metadata_check_seconds,
        quiet_warning_seconds=settings.kafka_quiet_warning_seconds,
    )


def kafka_sources(settings: Settings) -> dict[str, Source[Any]]:
    """The events topic and each lookup's reference topic, by the step id that reads each."""
    config = settings.kafka_client_config()
    topic_args = (config, settings.kafka_batch_size, settings.kafka_stop_at_end)
    commit_group = settings.kafka_commit_group
    faults = fault_settings(settings)
    inputs: dict[str, Source[Any]] = {
        "events_in": EventSource(
            settings.kafka_brokers,
            settings.kafka_events_topic,
            *topic_args,
            commit_group=commit_group,
            faults=faults,
            start=OFFSET_BEGINNING if settings.kafka_events_start == "earliest" else OFFSET_END,
        )
    }
    for lookup in settings.lookups:
        if lookup.file is None and lookup.topic is not None:
            inputs[f"reference_in_{lookup.name}"] = ReferenceSource(
                settings.kafka_brokers,
                lookup.topic,
                *topic_args,
                commit_group=commit_group,
                faults=faults,
                lookup=lookup.name,
            )
    return inputs


def sources(settings: Settings) -> dict[str, Source[Any]]:
    """Every input of the configured source, by the step id that reads it."""
    inputs: dict[str, Source[Any]] = (
        kafka_sources(settings) if settings.source == "kafka" else {"input": demo_source(settings)}
    )
    for lookup in settings.lookups:
        if lookup.file is not None:
            inputs[f"reference_file_{lookup.name}"] = ReferenceFileSource(
                lookup.file, lookup.name, settings.kafka_batch_size
            )
    return inputs


def main_sink(
    settings: Settings, recovery: bool | None = None, on_commit: OnCommit | None = None
) -> UpsertSink:
    return UpsertSink(
        database.dialect(settings),
        table(settings),
        settings.sink_partitions,
        settings.sink_batch_size,
        dead_letters=database.dead_letter_table(settings),
        policy=database.retry_policy(settings),
        recovery=recovery,
        on_commit=on_commit,
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
    """The optional second sink: every record the main sink gets, keyed by lookup id."""
    if not settings.enriched_topic:
        return
    message = enriched_messages(table(settings))
    records = op.flat_map_batch(
        "enriched_messages",
        enriched,
        lambda batch: [message(rec) for rec in steps.enriched_of(batch)],
    )
    producer = topic_sink(
        settings.kafka_brokers, settings.enriched_topic, settings.kafka_client_config()
    )
    op.output("enriched_out", records, producer)


def enrich_step(name: str, into: Stream[Any], config: EnrichConfig) -> Stream[Any]:
    """The join keyed by shard, and the segments its misses are parked in (`operators.parking`).

    Both emit (key, list of outputs); the join's messages to its segments
    leave as `Parcels` and never reach the outputs.
    """
    observe = partial(record_tally, name)
    joined = op.stateful_batch(join_step(name), into, join_builder(config, time.time, observe))
    parcels = op.flat_map_batch(f"to_segments_{name}", joined, steps.to_segments)
    segments = segment_builder(config, time.time, observe)
    parked = op.stateful_batch(park_step(name), parcels, segments)
    return op.merge(f"outputs_{name}", joined, parked)


def _stages(settings: Settings) -> list[Stage]:
    return [Stage(lookup.name, tuple(lookup.stored_columns())) for lookup in settings.lookups]


def enrich_chain(
    settings: Settings, decoded: Stream[Any], stages: list[Stage]
) -> tuple[Stream[Any], list[Stream[Any]]]:
    """One stateful step per lookup, each keyed by a shard of its own key; between two
    of them, `HandOn` hands each joined event on under the next key.

    Returns the last lookup's outputs and the dead letters handing on produced.
    """
    lookups = settings.lookups
    shard_names = routing.names(settings.shards)
    dead: list[Stream[Any]] = []
    handed_on: Stream[Any] | None = None
    for index, lookup in enumerate(lookups):
        name = lookup.name
        updates = op.filter_map(f"updates_{name}", decoded, partial(steps.for_lookup, name))
        into = updates if handed_on is None else op.merge(f"into_{name}", updates, handed_on)
        outputs = enrich_step(name, into, enrich_config(settings, lookup))
        if index + 1 == len(lookups):
            return outputs, dead
        hand_on = steps.HandOn(stages[index], lookups[index + 1].key_field, shard_names)
        split = op.branch(
            f"split_{name}", op.flat_map_batch(f"hand_on_{name}", outputs, hand_on), steps.is_routed
        )
        handed_on = split.trues
        dead.append(split.falses)
    raise AssertionError("settings guarantee at least one lookup")


def build_flow(
    settings: Settings,
    inputs: Mapping[str, Source[Any]] | None = None,
    sink: Sink[Any] | None = None,
    dead_letter_sink: Sink[Any] | None = None,
    recovery: bool | None = None,
    event_partitions: int | None = None,
) -> Dataflow:
    """The dataflow; tests and benchmarks may swap the inputs or sinks, nothing else.

    `recovery` says whether the run has a recovery store (None: unknown), so
    that a failure's message says truly what a restart will do;
    `event_partitions`, the events topic's partition count, if known. Steps, in order:
    read every input, decode and route by shard, the lookup chain, route to the
    sink's partitions, write; dead letters from every step go to one output.
    """
    stages = _stages(settings)
    earlier = tuple(column for stage in stages[:-1] for column in stage.columns)
    route = steps.DecodeAndRoute(
        decoder(settings),
        [lookup.name for lookup in settings.lookups],
        routing.names(settings.shards),
        record_decoded,
        ArrivalNumbers(time.time_ns),
        clocked=frozenset(
            lookup.name for lookup in settings.lookups if settings.clock_of(lookup) == "event"
        ),
        event_partitions=partition_count(settings, event_partitions),
    )
    to_sink = steps.ToSink(
        stages[-1],
        earlier,
        settings.lookup_field,
        routing.names(settings.sink_partitions),
        table(settings).rows,
    )

    flow = Dataflow("enrich")
    streams = [op.input(name, flow, src) for name, src in (inputs or sources(settings)).items()]
    raw = streams[0] if len(streams) == 1 else op.merge("raw", *streams)
    checked = op.branch("split_invalid", op.flat_map_batch("decode", raw, route), steps.is_routed)
    joined, chain_dead = enrich_chain(settings, checked.trues, stages)
    routed = op.branch(
        "split_dead_letters", op.flat_map_batch("route", joined, to_sink), steps.is_routed
    )
    op.output("sink", routed.trues, sink or main_sink(settings, recovery))
    dead = op.merge("dead_letters", checked.falses, *chain_dead, routed.falses)
    write_dead_letters(settings, op.map("count_dead_letters", dead, counted), dead_letter_sink)
    write_enriched_topic(settings, routed.trues)
    return flow
