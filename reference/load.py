"""One load of the reference table into the topic: full, or incremental from the watermark.

- Full: every row that matches the filter is published; then every key the
  topic holds a live row for that was not published (deleted, soft-deleted
  or no longer matching) gets a tombstone. The watermark becomes the greatest
  change value read, saved once everything is confirmed.
- Incremental: the rows whose change value is above the watermark, in change
  order; a row that is soft-deleted or no longer matches gets a tombstone.
  After each batch the producer is flushed and the watermark advances to the
  last change value all of whose rows are delivered (the rows of the value
  still being read may continue in the next batch).

A delivery that fails raises before the state is saved, so the next load
reads the same rows again; a record delivered twice carries the same
version, which the dataflow ignores.

Before either, for an as-of lookup, the topic's `min.compaction.lag.ms` is
raised to the lookup's history window where it is lower (`reference.compaction`;
a topic that does not exist yet is checked again after the load), and every
column the settings name is checked against the table (`reference.columns`).
A full load that would tombstone more than `ENRICH_PUBLISH_MAX_DELETE_SHARE`
of the topic's live keys first reads the table once without producing, to
count them, and publishes nothing when the guard refuses (`reference.guard`);
an empty topic skips that read.

A row the dataflow's decode would refuse (a NaN or infinite value, or one
the lookup's declared columns refuse: `reference.reader`) is neither
published nor tombstoned, counted by rule and logged
(`reference.report.HeldBackLog`); the watermark moves past it like past any
row read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

from reference.columns import check_columns
from reference.compaction import Lag, TopicConfigs, ensure_history_kept, needed_lag_ms
from reference.guard import DeleteGuard
from reference.query import ReferenceQuery
from reference.reader import Record, RecordBuilder, RowKind
from reference.report import HeldBackLog, LoadCounts, LoadReport, ProgressLog
from reference.settings import PublisherSettings
from reference.source import ReadConnection, Row, connect, read
from reference.topic import live_keys
from reference.watermark import PublishState, StateFile, Watermark
from sinks.kafka_producer import ConfirmedProducer
from sources.kafka_admin import admin_client, config_checked

log = logging.getLogger("enrich.publisher")


def scope(settings: PublisherSettings) -> dict[str, Any]:
    """The settings that decide what a row becomes in the topic, as saved with the watermark."""
    where = settings.oracle_dsn if settings.publish_database == "oracle" else None
    return {
        "database": settings.publish_database,
        "source": where or str(settings.publish_sqlite_path),
        "table": settings.publish_table,
        "key_column": settings.publish_key_column,
        "columns": list(settings.publish_columns),
        "change_column": settings.publish_change_column,
        "soft_delete_column": settings.publish_soft_delete_column,
        "filter": [condition.model_dump(mode="json") for condition in settings.publish_filter],
        "topic": settings.reference_topic,
        "version_field": settings.version_field,
    }


class Publisher:
    """Runs loads; each has its own connection and producer: a failed one leaves nothing behind."""

    def __init__(self, settings: PublisherSettings) -> None:
        self._settings = settings
        self._query, self._builder = _reading(settings, settings.selected_columns())
        self._count_query, self._count_builder = _reading(
            settings, settings.selected_columns(published=False), columns=()
        )
        self._state = StateFile(settings.publish_state_path)
        self._scope = scope(settings)
        self._guard = DeleteGuard(
            settings.publish_max_delete_share, settings.publish_allow_mass_delete
        )

    def load(self, full: bool = False) -> LoadReport:
        """A full load when asked, or when no usable watermark exists; else an incremental one."""
        watermark = None if full else self._resume_point()
        counts = LoadCounts()
        held = HeldBackLog()
        started = time.monotonic()
        settings = self._settings
        config = settings.kafka_client_config()
        with config_checked(config):
            producer = ConfirmedProducer(settings.kafka_brokers, config)
        no_topic = self._keep_history(config) is Lag.NO_TOPIC
        with closing(connect(settings)) as connection:
            check_columns(settings, connection)
            if watermark is None:
                new_watermark = self._full(connection, producer, counts, held)
            else:
                new_watermark = self._incremental(connection, producer, counts, held, watermark)
        if no_topic:
            self._keep_history(config)  # its records may have created it
        if counts.without_key:
            log.warning(
                "%s rows have no %s and were not published",
                f"{counts.without_key:,}",
                settings.publish_key_column,
            )
        held.finish()
        return LoadReport(watermark is None, counts, new_watermark, time.monotonic() - started)

    def _keep_history(self, config: dict[str, str]) -> Lag | None:
        """An as-of lookup's topic keeps its history (`reference.compaction`); None for latest,
        which asks the brokers nothing."""
        settings = self._settings
        if needed_lag_ms(settings.lookup) is None:
            return None
        admin = topic_admin(settings.kafka_brokers, config)
        return ensure_history_kept(
            admin, settings.kafka_brokers, settings.reference_topic, settings.lookup
        )

    def _resume_point(self) -> Watermark | None:
        state = self._state.load()
        if state is None:
            log.info("no state file at %s: full load", self._state.path)
        elif state.scope != self._scope:
            log.warning("the settings of what is published changed since the last load: full load")
        elif state.watermark is None:
            log.info("no change value seen yet: full load")
        else:
            return state.watermark
        return None

    def _send(
        self, producer: ConfirmedProducer, key: bytes, value: bytes | None, counts: LoadCounts
    ) -> None:
        producer.send(self._settings.reference_topic, key, value)
        if value is None:
            counts.tombstones += 1
        else:
            counts.published += 1

    def _rows(
        self, connection: ReadConnection, sql: str, watermark: Watermark | None
    ) -> Iterator[list[Row]]:
        settings = self._settings
        return read(
            connection, settings.publish_database, sql, watermark, settings.publish_batch_size
        )

    def _full(
        self,
        connection: ReadConnection,
        producer: ConfirmedProducer,
        counts: LoadCounts,
        held: HeldBackLog,
    ) -> Watermark | None:
        settings = self._settings
        live = live_keys(
            settings.kafka_brokers, settings.reference_topic, settings.kafka_client_config()
        )
        total = len(live)
        log.info("full load: the topic holds %s live keys", f"{total:,}")
        if live and not self._guard.allowed:
            self._check_deletes(self._unpublished(connection, live), total, "would tombstone")
        progress = ProgressLog("full load", counts, settings.progress_seconds)
        highest: Watermark | None = None
        for rows in self._rows(connection, self._query.full(), None):
            for row in rows:
                record = self._builder.record(row)
                _count(record, counts, held)
                change = record.change
                if change is not None and (highest is None or change > highest):
                    highest = change
                if record.kind is RowKind.LIVE and record.key is not None:
                    self._send(producer, record.key, record.value, counts)
                    live.discard(record.key)
                elif record.kind is RowKind.HELD_BACK:
                    live.discard(record.key)  # held back, not gone: no tombstone
            progress.tick()
        producer.confirm()
        # The table may have changed since the count: the tombstones are checked again.
        self._check_deletes(len(live), total, "tombstones", counts.published)
        for key in live:
            self._send(producer, key, None, counts)
        producer.confirm()
        self._state.save(PublishState(highest, self._scope))
        return highest

    def _unpublished(self, connection: ReadConnection, live: set[bytes]) -> int:
        """How many live keys a full load would tombstone: a read of the table, nothing produced."""
        remaining = set(live)
        for rows in self._rows(connection, self._count_query.full(), None):
            for row in rows:
                record = self._count_builder.record(row)
                if record.kind in _KEPT and record.key is not None:
                    remaining.discard(record.key)
        return len(remaining)

    def _check_deletes(self, would_delete: int, live: int, verb: str, published: int = 0) -> None:
        """Log the deletes with their numbers as fields (a log-based metric), then guard them."""
        guard = self._guard
        fields = {
            "would_delete": would_delete,
            "live_keys": live,
            "max_delete_share": guard.max_share,
        }
        message = f"full load: {verb} {would_delete:,} of {live:,} live keys"
        if not guard.over(would_delete, live):
            log.info(message, extra=fields)
        elif guard.allowed:
            log.warning(
                f"{message}, over ENRICH_PUBLISH_MAX_DELETE_SHARE ({guard.max_share:.1%}): "
                "allowed by --allow-mass-delete / ENRICH_PUBLISH_ALLOW_MASS_DELETE",
                extra=fields,
            )
        guard.check(would_delete, live, published)

    def _incremental(
        self,
        connection: ReadConnection,
        producer: ConfirmedProducer,
        counts: LoadCounts,
        held: HeldBackLog,
        watermark: Watermark,
    ) -> Watermark:
        progress = ProgressLog("incremental load", counts, self._settings.progress_seconds)
        delivered = saved = watermark
        current: Watermark | None = None
        for rows in self._rows(connection, self._query.changed_since(), watermark):
            for row in rows:
                record = self._builder.record(row)
                _count(record, counts, held)
                if record.change != current:
                    delivered = delivered if current is None else current
                    current = record.change
                if record.key is not None and record.kind is not RowKind.HELD_BACK:
                    self._send(producer, record.key, record.value, counts)
            producer.confirm()
            if delivered != saved:
                self._state.save(PublishState(delivered, self._scope))
                saved = delivered
            progress.tick()
        final = watermark if current is None else current
        if final != saved:
            self._state.save(PublishState(final, self._scope))
        return final


def topic_admin(brokers: list[str], config: dict[str, str]) -> TopicConfigs:
    """The admin client that reads and sets the topic's configuration."""
    return admin_client(brokers, config, [])


_KEPT = (RowKind.LIVE, RowKind.HELD_BACK)
"""Rows whose key a full load does not tombstone: published, or held back."""


def _reading(
    settings: PublisherSettings, selected: tuple[str, ...], columns: tuple[str, ...] | None = None
) -> tuple[ReferenceQuery, RecordBuilder]:
    """The read of `selected` columns and the builder of its records (`columns` in the value)."""
    query = ReferenceQuery(
        settings.publish_database,
        settings.publish_table,
        selected,
        settings.publish_change_column,
    )
    builder = RecordBuilder(
        selected=selected,
        key_column=settings.publish_key_column,
        columns=settings.publish_columns if columns is None else columns,
        change_column=settings.publish_change_column,
        version_field=settings.version_field,
        soft_delete_column=settings.publish_soft_delete_column,
        conditions=settings.publish_filter,
        schema=settings.lookup.reference_schema(publisher=True),
    )
    return query, builder


def _count(record: Record, counts: LoadCounts, held: HeldBackLog) -> None:
    kind = record.kind
    counts.read += 1
    if kind is RowKind.FILTERED_OUT:
        counts.filtered_out += 1
    elif kind is RowKind.DELETED:
        counts.soft_deleted += 1
    elif kind is RowKind.NO_KEY:
        counts.without_key += 1
    elif kind is RowKind.HELD_BACK:
        counts.held_back += 1
        by_rule = counts.held_back_by_rule
        by_rule[record.rule] = by_rule.get(record.rule, 0) + 1
        held.add(record)
