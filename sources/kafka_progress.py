"""What a Kafka partition shows of its progress: consumer lag, and committed offsets.

Lag is the partition's high watermark minus the next offset the flow will
read, from the watermark librdkafka cached from its last fetch response: no
request to a broker, and published at most every `LAG_SECONDS` per partition.
While the flow does not read (a sink waiting, say), the gauge keeps its last
value.

Commits go to the consumer group `ENRICH_KAFKA_COMMIT_GROUP` names, so
standard tools (`kafka-consumer-groups --describe`) show the flow's progress.
They are never read back: the recovery store alone decides where a resumed
flow starts, and every partition is assigned its offset explicitly.

Only completed snapshots are committed. Bytewax 0.21 calls a partition's
`next_batch` and `snapshot` in epoch E only once every output has finished
every epoch before E and, with recovery, once their snapshots and frontiers
are written (the input waits on the probe at the end of the recovery writer).
So, at any such call, every snapshot returned by an earlier call is complete:
a restart would resume from it or from a later one. Each call therefore
commits the snapshot before it, one epoch behind. The last snapshot of a
bounded run has no later call; with commits on, a partition at the end of its
input keeps returning empty batches until a snapshot of that end has been
taken and a later call has proved it complete, and only then ends: at most
one epoch longer.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from telemetry.metrics import KAFKA_COMMIT_ERRORS, KAFKA_LAG

log = logging.getLogger("enrich.kafka")

LAG_SECONDS = 1.0
"""How often at most a partition publishes its lag."""

UNUSED_GROUP = "enrich-unused"
"""The consumers' group when nothing is committed: never joined, never written."""


def commit_config(report: CommitReport | None) -> dict[str, Any]:
    """The consumer's group, and who hears how its commits went; never joined either way."""
    if report is None:
        return {"group.id": UNUSED_GROUP}
    return {"group.id": report.group, "on_commit": report.committed}


class CommitReport:
    """librdkafka's `on_commit` for the consumers of one topic: counts failures, and says
    when they start and end.

    A failed commit costs nothing but stale progress in lag tools, so the flow
    goes on; one warning per run of failures, not one per partition and epoch.
    """

    def __init__(self, group: str, topic: str) -> None:
        self.group = group
        self._topic = topic
        self._failing = False

    def committed(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        reasons = [error.str()] if error is not None else []
        reasons += [p.error.str() for p in partitions if p.error is not None]
        where = ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "offsets"
        self.report(where, reasons[0] if reasons else None)

    def report(self, where: str, failure: str | None) -> None:
        if failure is not None:
            KAFKA_COMMIT_ERRORS.labels(topic=self._topic).inc()
            if not self._failing:
                log.warning(
                    "cannot commit %s to consumer group %r (%s): lag tools show older "
                    "progress until it works again. The flow goes on and resumes from its "
                    "recovery store either way. Check the group's ACLs and that no other "
                    "client joins this group",
                    where,
                    self.group,
                    failure,
                )
        elif self._failing:
            log.info("commits to consumer group %r work again (%s)", self.group, where)
        self._failing = failure is not None


class PartitionProgress:
    """Lag and commits of one assigned partition of one consumer.

    Without a `report` (no commit group), nothing is committed.
    """

    def __init__(
        self, consumer: Consumer, topic: str, index: int, report: CommitReport | None
    ) -> None:
        self._consumer = consumer
        self._partition = TopicPartition(topic, index)
        self._report = report
        self._labels = {"topic": topic, "partition": str(index)}
        self._lag_due = 0.0
        self._taken: int | None = None
        self._committed: int | None = None

    def batch_started(self) -> None:
        """At each `next_batch`: the last snapshot taken is complete, so commit it."""
        self._commit(self._taken)

    def snapshot_taken(self, state: int | None) -> None:
        """At each `snapshot`: the one before is complete; this one is, by the next call."""
        self._commit(self._taken)
        self._taken = state

    def settled(self, state: int | None) -> bool:
        """At the end of input: whether the partition may end, its end committed if need be."""
        return self._report is None or state is None or self._committed == state

    def read_up_to(self, next_offset: int, now: bool = False) -> None:
        """After a batch: publish the lag if it is due (`now`: whatever the pace).

        `next_offset` may still be the symbolic start (beginning or end) when
        nothing was read yet; it then stands for the low or the high watermark.
        """
        clock = time.monotonic()
        if not now and clock < self._lag_due:
            return
        low, high = self._consumer.get_watermark_offsets(self._partition, cached=True)
        if high < 0:
            return  # no fetch response yet: unknown, not zero
        if next_offset < 0:
            next_offset = low if next_offset == OFFSET_BEGINNING else high
        # The series appears with its first known value: a child made earlier would show 0.
        KAFKA_LAG.labels(**self._labels).set(max(high - next_offset, 0))
        self._lag_due = clock + LAG_SECONDS

    def _commit(self, state: int | None) -> None:
        if self._report is None or state is None or state == self._committed:
            return
        offset = TopicPartition(self._partition.topic, self._partition.partition, state)
        try:
            self._consumer.commit(offsets=[offset], asynchronous=True)
        except KafkaException as exc:  # e.g. the local queue is full; tried again next epoch
            self._report.report(f"{offset.topic}[{offset.partition}]", str(exc))
            return
        self._committed = state
