"""The events topic and the reference topic as partitioned Bytewax sources.

Both deliver `RawRecord`s whose origin is `kafka/topic/partition/offset`, so
a dead letter points back at its message and an event without an id gets one
that is the same on every replay. Partitions are listed by Bytewax's
`KafkaSource`; reading is done on confluent-kafka directly, for two reasons
measured or missing in Bytewax's partition: it builds a frozen dataclass per
message, which cost more than all the rest of reading (docs/BENCHMARKS.md),
and it has no signal for "this partition has reached the end it saw at start".

- Events resume from the offsets in the recovery store.
- The reference topic is where rows live (the join keeps none in its
  snapshots), so every start re-reads it from the beginning. Records before
  the snapshotted offset are marked `replay`: they rebuild rows without
  releasing or dead-lettering anything twice. When a partition reaches the end
  it saw at start it sends `CaughtUp`, telling the join its rows are complete.
  librdkafka's end-of-partition event is that signal: unlike comparing offsets
  with the high watermark, it also holds for transaction markers.
- Every record carries its Kafka timestamp in epoch seconds (None when the
  message format has none, as before Kafka 0.10): event-time timeouts, row
  TTL and as-of validity (`record_time`) read it.
- Each partition publishes its consumer lag and, with a commit group, commits
  its completed snapshots (sources/kafka_progress.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from operators.records import CaughtUp, Kind, RawRecord
from sources.broker_health import ClusterWatch
from sources.kafka_admin import list_cluster, require_topics
from sources.kafka_faults import DEFAULT_FAULTS, FaultSettings, PartitionGuard
from sources.kafka_progress import CommitReport, PartitionProgress, commit_config
from telemetry.kafka_logs import logged

_POLL_SECONDS = 0.001
"""How long one poll waits for messages; Bytewax's own Kafka partition uses the same."""


def consumer_config(
    brokers: Iterable[str],
    config: Mapping[str, str],
    end_events: bool,
    report: CommitReport | None = None,
) -> dict[str, Any]:
    """A consumer that is assigned partitions and keeps its offsets elsewhere."""
    return logged(
        {
            "bootstrap.servers": ",".join(brokers),
            # Offsets live in the recovery store; the group is never joined, and its
            # commits (sources/kafka_progress.py) are never read back.
            **commit_config(report),
            "enable.auto.commit": "false",
            "enable.partition.eof": str(end_events).lower(),
            # librdkafka's 500 ms lets a fetch wait that long for data; the
            # latency benchmark measured 300 ms p50 with it, 43 ms with 50.
            "fetch.wait.max.ms": "50",
            **config,
            # Never jump silently: a lost offset is reported and handled (sources/kafka_faults.py).
            "auto.offset.reset": "error",
        }
    )


class _Partition(StatefulSourcePartition[RawRecord | CaughtUp, int | None]):
    """One Kafka partition; the snapshot is the next offset to read.

    `replay_below` marks records before that offset as replayed, and never
    lets the snapshot fall below it, so a crash while re-reading keeps the
    boundary between replayed and new records. `caught_up` names the
    partition and lookup in the `CaughtUp` it sends at the first end of
    partition; a reference partition stamps that lookup on its records.
    """

    def __init__(
        self,
        consumer: Consumer,
        kind: Kind,
        topic: str,
        index: int,
        start: int,
        batch_size: int,
        stop_at_end: bool,
        guard: PartitionGuard,
        replay_below: int = 0,
        caught_up: CaughtUp | None = None,
        report: CommitReport | None = None,
    ) -> None:
        self._guard = guard
        self._consumer = consumer
        self._kind = kind
        self._topic = topic
        self._index = index
        self._next = start
        self._batch_size = batch_size
        self._stop_at_end = stop_at_end
        self._replay_below = replay_below
        self._caught_up = caught_up
        self._lookup = "" if caught_up is None else caught_up.lookup
        self._done = False
        self._progress = PartitionProgress(consumer, topic, index, report)
        consumer.assign([TopicPartition(topic, index, start)])

    def next_batch(self) -> list[RawRecord | CaughtUp]:
        self._progress.batch_started()
        if self._done:
            # With commits on, end only once the snapshot of the end is committed.
            if self._progress.settled(self._position()):
                raise StopIteration
            return []
        self._guard.check()
        batch: list[RawRecord | CaughtUp] = []
        append = batch.append
        kind, topic, index, replay_below = self._kind, self._topic, self._index, self._replay_below
        lookup = self._lookup
        no_time = TIMESTAMP_NOT_AVAILABLE
        offset = -1
        for msg in self._consumer.consume(self._batch_size, _POLL_SECONDS):
            error = msg.error()
            if error is None:
                offset = msg.offset()  # type: ignore[assignment]  # set on every message read
                # (type, ms): only the type tells a missing timestamp; ms is then 0, a real time.
                time_type, ms = msg.timestamp()
                append(
                    RawRecord(
                        kind,
                        msg.key(),
                        msg.value(),
                        f"kafka/{topic}/{index}/{offset}",
                        offset < replay_below,
                        lookup,
                        None if time_type == no_time else ms / 1000,
                    )
                )
                continue
            if error.code() == KafkaError._AUTO_OFFSET_RESET:
                lost = msg.offset()
                expected = lost if lost is not None and lost >= 0 else self._next
                self._next = self._guard.offsets_lost(self._consumer, topic, index, expected)
                offset = -1
                break
            if error.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(error)
            if self._caught_up is not None:
                append(self._caught_up)
                self._caught_up = None
            if self._stop_at_end:
                self._done = True
                break
        if offset >= 0:
            self._next = offset + 1
        self._progress.read_up_to(self._next, now=self._done)
        return batch

    def snapshot(self) -> int | None:
        state = self._position()
        self._progress.snapshot_taken(state)
        return state

    def _position(self) -> int | None:
        """What a snapshot taken now holds."""
        if self._next < 0:
            # Nothing read yet, so the start is still symbolic (beginning or end).
            return self._replay_below or None
        return max(self._next, self._replay_below)

    def close(self) -> None:
        self._consumer.close()
        self._guard.release()


class _TopicSource(FixedPartitionedSource[RawRecord | CaughtUp, int | None]):
    """One topic, one Bytewax partition per Kafka partition."""

    def __init__(
        self,
        brokers: Iterable[str],
        topic: str,
        config: Mapping[str, str],
        batch_size: int,
        stop_at_end: bool,
        commit_group: str | None = None,
        faults: FaultSettings = DEFAULT_FAULTS,
    ) -> None:
        self._brokers = list(brokers)
        self._faults = faults
        self._topic = topic
        self._config = dict(config)
        self._batch_size = batch_size
        self._stop_at_end = stop_at_end
        # One per topic, shared by its partitions' consumers: one warning when commits fail.
        self._report = None if commit_group is None else CommitReport(commit_group, topic)
        self._parts: list[str] | None = None

    def list_parts(self) -> list[str]:
        """Asked of the cluster once: every partition built needs the count.

        The whole cluster's listing, with a deadline: asking for the topic by
        name would create it on brokers that allow that. Named as Bytewax's
        own Kafka source names them, so recovery stores stay compatible.
        """
        if self._parts is None:
            timeout = self._faults.start_timeout_seconds
            listing = list_cluster(self._brokers, self._config, timeout)
            require_topics(listing, {self._topic: "topic read"})
            self._parts = [f"{index}-{self._topic}" for index in range(listing[self._topic])]
        return self._parts

    def _guard(self) -> PartitionGuard:
        """A partition's fault handling; the process's cluster watch follows this topic."""
        faults = self._faults
        watch = ClusterWatch.shared(
            self._brokers, self._config, faults.metadata_check_seconds, faults.quiet_warning_seconds
        )
        watch.follow(self._topic, len(self.list_parts()))
        return PartitionGuard(watch, faults)

    def _consumer(self, end_events: bool, report: CommitReport | None = None) -> Consumer:
        return Consumer(consumer_config(self._brokers, self._config, end_events, report))


class EventSource(_TopicSource):
    """The events topic, resumed from the offsets in the recovery store."""

    def __init__(self, *args: Any, start: int = OFFSET_BEGINNING, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start = start

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Partition:
        index = int(for_part.partition("-")[0])
        report = self._report
        return _Partition(
            self._consumer(self._stop_at_end, report),
            Kind.EVENT,
            self._topic,
            index,
            self._start if resume_state is None else resume_state,
            self._batch_size,
            self._stop_at_end,
            self._guard(),
            report=report,
        )


class ReferenceSource(_TopicSource):
    """A lookup's compacted reference topic, re-read from its beginning on every start."""

    def __init__(self, *args: Any, lookup: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lookup = lookup

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Partition:
        index = int(for_part.partition("-")[0])
        report = self._report
        consumer, guard = self._consumer(True, report), self._guard()
        return _Partition(
            consumer,
            Kind.REFERENCE,
            self._topic,
            index,
            OFFSET_BEGINNING,
            self._batch_size,
            self._stop_at_end,
            guard,
            replay_below=guard.replay_boundary(consumer, self._topic, index, resume_state or 0),
            caught_up=CaughtUp(f"{self._topic}/{index}", len(self.list_parts()), self._lookup),
            report=report,
        )
