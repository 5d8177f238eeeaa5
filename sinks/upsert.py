"""The main sink: enriched events upserted by event id, one connection per partition.

Written once for every database; a `Dialect` holds what differs. Recovery
needs no sink state. Each chunk is committed before `write_batch` returns, so
a crash either loses an uncommitted chunk, which the dataflow replays, or
leaves committed rows, which the replay overwrites with the same values.
Upserting by event id is what turns at-least-once delivery into exactly one
row per event.

Rows the database refuses go to the dead-letter table in the same
transaction as the rows it took, so they too are written exactly once. If a
dead letter is refused as well, nothing of the chunk commits and the error
stops the dataflow; with a recovery store it resumes from its last snapshot,
so nothing is lost.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from operators import routing
from operators.records import Status
from operators.sink_rows import EVENT_TIME, STATUS, SinkRow
from sinks.dialect import Dialect, RowError
from sinks.retry import SYSTEM_CLOCK, CircuitState, Clock, Retrier, RetryPolicy
from sinks.schema import create_tables
from sinks.table import DB_REJECTED, DeadLetterTable, EnrichedTable
from telemetry import metrics

log = logging.getLogger("enrich.sink")

_ROWS = {status.value: metrics.SINK_ROWS.labels(status.value) for status in Status}
DEFAULT_DEAD_LETTERS = DeadLetterTable()
OnCommit = Callable[[Sequence[Sequence[Any]], float], None]
"""Told each committed chunk's bind rows (the refused left out) and the commit's wall time."""
DEFAULT_POLICY = RetryPolicy()


class DeadLetterRefused(Exception):
    """The database refused a row's dead letter too: nothing can take that row."""


def restart_note(recovery: bool | None) -> str:
    """What starting again after a permanent error does, for a run with or without recovery."""
    if recovery:
        return (
            "Fix the cause and start the dataflow again with the same -r directory: it resumes "
            "from its last snapshot, so nothing is lost."
        )
    afresh = (
        "it starts its sources afresh (the demo and ENRICH_KAFKA_EVENTS_START=earliest from "
        "the beginning, which the upsert by event id makes harmless; "
        "ENRICH_KAFKA_EVENTS_START=latest from the end, skipping what came meanwhile), and "
        "events that were waiting for their reference row are not written."
    )
    if recovery is False:
        return f"This run has no recovery store (-r): fix the cause and start it again; {afresh}"
    return (
        "Fix the cause and start the dataflow again. With a recovery store (-r) it resumes "
        f"from its last snapshot, so nothing is lost; without one {afresh}"
    )


def _retrier(
    partition: str,
    dialect: Dialect[Any],
    policy: RetryPolicy,
    clock: Clock,
    recovery: bool | None = None,
) -> Retrier:
    """A retrier whose failures and circuit changes show in metrics and logs, never values."""
    state = metrics.SINK_CIRCUIT_STATE.labels(partition)
    state.set(CircuitState.CLOSED)

    def on_failure(exc: BaseException, transient: bool) -> None:
        metrics.SINK_ERRORS.labels("transient" if transient else "permanent").inc()
        if transient:
            metrics.SINK_RETRIES.inc()
            log.warning("sink partition %s: transient database error, retrying: %s", partition, exc)
            return
        log.error("sink partition %s: permanent database error: %s", partition, exc)
        exc.add_note(
            f"sink partition {partition}: a permanent database error, not retried; what the "
            f"partition was writing was rolled back. {restart_note(recovery)}"
        )

    def on_state(new: CircuitState) -> None:
        state.set(new)
        if new is CircuitState.OPEN:
            log.warning(
                "sink partition %s: circuit open after repeated failures; "
                "next attempt in %.0f s, the dataflow waits",
                partition,
                policy.breaker_reset_seconds,
            )
        elif new is CircuitState.HALF_OPEN:
            log.info("sink partition %s: circuit half-open, probing the database", partition)
        else:
            log.info("sink partition %s: circuit closed, the database answers again", partition)

    return Retrier(
        policy, dialect.is_transient, on_failure=on_failure, on_state=on_state, clock=clock
    )


class _UpsertPartition(StatefulSinkPartition[list[SinkRow], None]):
    def __init__(
        self,
        dialect: Dialect[Any],
        table: EnrichedTable,
        dead_letters: DeadLetterTable,
        retrier: Retrier,
        batch_size: int,
        on_commit: OnCommit | None = None,
    ) -> None:
        self._dialect = dialect
        self._table = table
        self._dead_letters = dead_letters
        self._retrier = retrier
        self._batch_size = batch_size
        self._on_commit = on_commit
        self._conn: Any = None

    def write_batch(self, values: list[list[SinkRow]]) -> None:
        records = [row for group in values for row in group]
        for start in range(0, len(records), self._batch_size):
            chunk = records[start : start + self._batch_size]
            params = [row.binds for row in chunk]
            started = time.perf_counter()
            refused = self._retrier.run(partial(self._commit, chunk, params))
            committed = time.time()
            metrics.SINK_BATCH_SECONDS.observe(time.perf_counter() - started)
            metrics.SINK_BATCHES.inc()
            if refused:
                metrics.DEAD_LETTERS.labels(DB_REJECTED).inc(len(refused))
                log.warning(
                    "%d of %d rows refused by the database went to table %s (codes: %s)",
                    len(refused),
                    len(chunk),
                    self._dead_letters.name,
                    ", ".join(sorted({error.code for error in refused})),
                )
                skipped = {error.index for error in refused}
                params = [row for index, row in enumerate(params) if index not in skipped]
            metrics.EVENT_TO_SINK_SECONDS.observe_many(
                committed - row[EVENT_TIME] for row in params if row[EVENT_TIME] is not None
            )
            for status, count in Counter(row[STATUS] for row in params).items():
                _ROWS[status].inc(count)
            if self._on_commit is not None:
                self._on_commit(params, committed)

    def _commit(self, chunk: list[SinkRow], params: Sequence[Sequence[Any]]) -> list[RowError]:
        """Write the chunk and its refused rows' dead letters, then commit them together.

        On any failure the transaction is rolled back and the connection let
        go, so a retry starts on a fresh one.
        """
        if self._conn is None:
            self._conn = self._dialect.connect()
        conn = self._conn
        try:
            refused = self._dialect.write(conn, self._table, params)
            if refused:
                columns = self._table.columns()
                letters = [
                    self._dead_letters.params(
                        chunk[error.index],
                        dict(zip(columns, params[error.index], strict=True)),
                        error.code,
                        error.message,
                    )
                    for error in refused
                ]
                unwritable = self._dialect.write(conn, self._dead_letters, letters)
                if unwritable:
                    first = unwritable[0]
                    raise DeadLetterRefused(
                        f"table {self._dead_letters.name} refused {len(unwritable)} dead letters "
                        f"({first.code}: {first.message})"
                    )
            conn.commit()
        except BaseException:
            self._conn = None
            try:
                conn.rollback()
            except Exception:
                log.debug("rollback after a failed write failed too", exc_info=True)
            self._dialect.discard(conn)
            raise
        return refused

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class UpsertSink(FixedPartitionedSink[list[SinkRow], None]):
    """Writes `(partition name, [SinkRow, ...])` items, one connection per partition.

    Bytewax picks a partition by indexing `part_fn(key)`, wrapped, into the
    *sorted* global partition names. The names are zero-padded
    (`routing.names`), so sorted order is numeric order and `part_fn` can
    return the index the key spells: "7" and "07" both go to partition 7.
    """

    def __init__(
        self,
        dialect: Dialect[Any],
        table: EnrichedTable,
        partitions: int,
        batch_size: int,
        *,
        dead_letters: DeadLetterTable = DEFAULT_DEAD_LETTERS,
        policy: RetryPolicy = DEFAULT_POLICY,
        clock: Clock = SYSTEM_CLOCK,
        recovery: bool | None = None,
        on_commit: OnCommit | None = None,
    ) -> None:
        """`recovery`: whether the run has a recovery store (None: unknown), for messages.
        `on_commit`: called after each commit (benchmarks count rows and latency with it).
        """
        if partitions < 1 or batch_size < 1:
            raise ValueError(f"partitions ({partitions}) and batch_size ({batch_size}) must be > 0")
        self.dialect = dialect
        self.table = table
        self.partitions = partitions
        self.batch_size = batch_size
        self.dead_letters = dead_letters
        self.policy = policy
        self.clock = clock
        self.recovery = recovery
        self.on_commit = on_commit

    def list_parts(self) -> list[str]:
        return routing.names(self.partitions)

    def part_fn(self, item_key: str) -> int:
        return int(item_key)

    def build_part(
        self, step_id: str, for_part: str, resume_state: None
    ) -> StatefulSinkPartition[list[SinkRow], None]:
        retrier = _retrier(for_part, self.dialect, self.policy, self.clock, self.recovery)
        retrier.run(partial(create_tables, self.dialect, self.table, self.dead_letters))
        return _UpsertPartition(
            self.dialect,
            self.table,
            self.dead_letters,
            retrier,
            self.batch_size,
            self.on_commit,
        )
