"""The main sink: enriched events upserted by event id, one connection per partition.

Recovery needs no sink state. Each chunk is committed before `write_batch`
returns, so a crash either loses an uncommitted chunk, which the dataflow
replays, or leaves committed rows, which the replay overwrites with the same
values. Upserting by event id is what turns at-least-once delivery into
exactly one row per event.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from operators import routing
from operators.records import Enriched, Status
from sinks.dialect import Connection, Dialect
from sinks.table import EnrichedTable
from telemetry import metrics

log = logging.getLogger("enrich.sink")

T = TypeVar("T")

_ATTEMPTS = 5
_FIRST_DELAY_SECONDS = 0.1
_ROWS = {status: metrics.SINK_ROWS.labels(status.value) for status in Status}


def _retrying(dialect: Dialect, action: Callable[[], T]) -> T:
    """Run `action`, again after a doubling pause while it fails transiently.

    Only for idempotent work: a failure may come after the database applied it.
    """
    delay = _FIRST_DELAY_SECONDS
    attempt = 1
    while True:
        try:
            return action()
        except Exception as exc:
            transient = dialect.is_transient(exc)
            metrics.SINK_ERRORS.labels("transient" if transient else "permanent").inc()
            if attempt == _ATTEMPTS or not transient:
                raise
            log.warning("transient database error (attempt %d): %s", attempt, exc)
            metrics.SINK_RETRIES.inc()
            time.sleep(delay)
            delay *= 2
            attempt += 1


def create_tables(dialect: Dialect, table: EnrichedTable) -> None:
    """Create the table unless it exists; safe to race from several partitions or processes."""

    def run() -> None:
        conn = dialect.connect()
        try:
            cursor = conn.cursor()
            try:
                for statement in dialect.create_table(table):
                    cursor.execute(statement)
                conn.commit()
            finally:
                cursor.close()
        finally:
            conn.close()

    _retrying(dialect, run)


class _UpsertPartition(StatefulSinkPartition[list[Enriched], None]):
    def __init__(
        self, dialect: Dialect, table: EnrichedTable, conn: Connection, batch_size: int
    ) -> None:
        self._dialect = dialect
        self._table = table
        self._conn = conn
        self._sql = dialect.upsert(table)
        self._batch_size = batch_size

    def write_batch(self, values: list[list[Enriched]]) -> None:
        records = [rec for group in values for rec in group]
        for start in range(0, len(records), self._batch_size):
            chunk = records[start : start + self._batch_size]
            params = [self._table.params(rec) for rec in chunk]
            started = time.perf_counter()
            _retrying(self._dialect, partial(self._commit, params))
            committed = time.time()
            metrics.SINK_BATCH_SECONDS.observe(time.perf_counter() - started)
            metrics.SINK_BATCHES.inc()
            metrics.EVENT_TO_SINK_SECONDS.observe_many(
                committed - rec.event.event_time
                for rec in chunk
                if rec.event.event_time is not None
            )
            for status, count in Counter(rec.status for rec in chunk).items():
                _ROWS[status].inc(count)

    def _commit(self, params: Sequence[Sequence[Any]]) -> None:
        cursor = self._conn.cursor()
        try:
            cursor.executemany(self._sql, params)
            self._conn.commit()
        except BaseException:
            self._conn.rollback()
            raise
        finally:
            cursor.close()

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        self._conn.close()


class UpsertSink(FixedPartitionedSink[list[Enriched], None]):
    """Writes `(partition name, [Enriched, ...])` items, one connection per partition.

    Bytewax picks a partition by indexing `part_fn(key)`, wrapped, into the
    *sorted* global partition names. The names are zero-padded
    (`routing.names`), so sorted order is numeric order and `part_fn` can
    return the index the key spells: "7" and "07" both go to partition 7.
    """

    def __init__(
        self, dialect: Dialect, table: EnrichedTable, partitions: int, batch_size: int
    ) -> None:
        if partitions < 1 or batch_size < 1:
            raise ValueError(f"partitions ({partitions}) and batch_size ({batch_size}) must be > 0")
        self.dialect = dialect
        self.table = table
        self.partitions = partitions
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return routing.names(self.partitions)

    def part_fn(self, item_key: str) -> int:
        return int(item_key)

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> StatefulSinkPartition[list[Enriched], None]:
        create_tables(self.dialect, self.table)
        conn = _retrying(self.dialect, self.dialect.connect)
        return _UpsertPartition(self.dialect, self.table, conn, self.batch_size)
