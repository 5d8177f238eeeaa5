"""Dead letters and enriched records as Kafka messages, for Bytewax's `KafkaSink`.

Kafka outputs are at least once: after a crash the resumed epoch is written
again. Each message therefore carries the event id (enriched) or the source
position (dead letters), so a consumer can drop repeats; the database sink
needs no such care because it upserts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
from pydantic_core import to_json

from operators.origins import parse_origin
from operators.records import DeadLetter
from operators.sink_rows import (
    ARRIVAL_SEQ,
    EVENT_ID,
    LOOKUP_ID,
    MISS_REASON,
    REF_VERSION,
    STATUS,
    WAITED_MS,
    SinkRow,
)
from sinks.table import EnrichedTable
from telemetry.kafka_logs import logged

Message = KafkaSinkMessage[bytes | None, bytes | None]


def dead_letter_message(letter: DeadLetter) -> Message:
    """The original key and bytes, untouched; why and where from travel as headers.

    The same layout as Kafka Connect's dead-letter queues, so existing tools
    for replaying those work here too.
    """
    headers = [
        ("enrich.reason", letter.reason.encode()),
        ("enrich.detail", letter.detail.encode()),
        ("enrich.origin", letter.origin.encode()),
    ]
    position = parse_origin(letter.origin)
    if position is not None:
        topic, partition, offset = position
        headers += [
            ("enrich.source.topic", topic.encode()),
            ("enrich.source.partition", str(partition).encode()),
            ("enrich.source.offset", str(offset).encode()),
        ]
    return KafkaSinkMessage(letter.key, letter.payload, headers=headers)


def enriched_messages(table: EnrichedTable) -> Callable[[SinkRow], Message]:
    """Keyed by lookup id, so one security's records stay in order on one partition.

    The value is the event as it came, plus the projected reference columns,
    plus what the join did under `enrichment`, apart from the producer's
    fields so no name can collide. The rows must keep the event's document
    (`EnrichedTable.keep_fields`). A late copy of an event id and a later one
    that hit leave by different steps, so they may reach the topic in either
    order: `arrival_seq` says which arrived last, as the table's upsert uses it.
    """
    shape = table.rows
    names = shape.reference_columns
    if not shape.keep_fields:
        raise ValueError("the enriched topic needs sink rows that keep the event's fields")

    def message(row: SinkRow) -> Message:
        binds = row.binds
        document = {
            **(row.fields or {}),
            **dict(zip(names, shape.reference(row), strict=True)),
            "enrichment": {
                "event_id": binds[EVENT_ID],
                "status": binds[STATUS],
                "miss_reason": binds[MISS_REASON],
                "waited_ms": binds[WAITED_MS],
                "ref_version": binds[REF_VERSION],
                "arrival_seq": binds[ARRIVAL_SEQ],
            },
        }
        return KafkaSinkMessage(binds[LOOKUP_ID].encode(), to_json(document))

    return message


def topic_sink(brokers: Iterable[str], topic: str, config: Mapping[str, str]) -> KafkaSink:
    """Producer settings favour not losing or reordering over latency."""
    return KafkaSink(
        list(brokers),
        topic,
        # Bytewax hands these to the producer as they are: the logger object too.
        add_config=logged({"enable.idempotence": "true", "linger.ms": "20", **config}),
    )
