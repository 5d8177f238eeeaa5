"""What a Kafka partition does when the cluster changes under it.

- Offsets lost: the offset a partition resumes at (or reads next) is no longer
  in the topic: it was deleted and recreated, a broker came back on empty
  storage, or retention passed it. Consumers run with
  `auto.offset.reset=error`, so librdkafka reports this instead of silently
  jumping to the end, and `OffsetPolicy` decides: `fail` (the default) stops
  the dataflow naming topic, partition, the offset expected and the range the
  topic holds; `earliest` or `latest` restart there, with an error logged and
  counted, since records were skipped or will be read again.
- Layout changed or brokers quiet: `broker_health.ClusterWatch`; a partition
  raises the watch's problem on its next batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import Consumer, TopicPartition

from sources.broker_health import ClusterWatch
from sources.kafka_errors import OffsetsLost
from telemetry import metrics

log = logging.getLogger("enrich.kafka")

ResetPolicy = Literal["fail", "earliest", "latest"]


@dataclass(frozen=True)
class FaultSettings:
    """The `ENRICH_KAFKA_*` settings that say how long to wait and what to do on a fault."""

    start_timeout_seconds: float = 30.0
    offset_reset_policy: ResetPolicy = "fail"
    metadata_check_seconds: float = 10.0
    quiet_warning_seconds: float = 30.0


DEFAULT_FAULTS = FaultSettings()


def restart_offset(
    policy: ResetPolicy, what: str, topic: str, partition: int, expected: int, low: int, high: int
) -> int:
    """Where to go on when offset `expected` is outside `[low, high]`, or `OffsetsLost`.

    `what` says which offset it was ("resumes at" for a recovery snapshot).
    """
    metrics.KAFKA_OFFSET_RESETS.labels(topic, policy).inc()
    where = (
        f"Kafka topic {topic!r} partition {partition}: the dataflow {what} offset {expected}, "
        f"but the partition holds offsets {low} to {high} (exclusive end)"
    )
    if policy == "fail":
        lost = OffsetsLost(
            f"{where}; the topic lost data it had (deleted and recreated, a broker on empty "
            "storage, or retention). Nothing was skipped. Restore the data, or set "
            "ENRICH_KAFKA_OFFSET_RESET_POLICY=earliest (read all the partition holds) or "
            "latest (skip to its end) to go on."
        )
        log.error("%s", lost)
        raise lost
    offset = low if policy == "earliest" else high
    log.error(
        "%s; ENRICH_KAFKA_OFFSET_RESET_POLICY=%s: going on from offset %d; what the partition "
        "no longer holds%s is not read",
        where,
        policy,
        offset,
        ", and what it holds before that offset," if policy == "latest" else "",
    )
    return offset


class PartitionGuard:
    """The fault handling one source partition needs, shared watch included."""

    def __init__(self, watch: ClusterWatch, settings: FaultSettings) -> None:
        self._watch = watch
        self._settings = settings

    def check(self) -> None:
        """Raise the watch's problem, if it found one: checked once per batch."""
        problem = self._watch.problem
        if problem is not None:
            raise problem

    def _watermarks(self, consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=self._settings.start_timeout_seconds
        )
        return low, high

    def offsets_lost(self, consumer: Consumer, topic: str, partition: int, expected: int) -> int:
        """librdkafka reported offset `expected` out of range: re-assign where the policy says."""
        low, high = self._watermarks(consumer, topic, partition)
        offset = restart_offset(
            self._settings.offset_reset_policy, "reads next", topic, partition, expected, low, high
        )
        consumer.assign([TopicPartition(topic, partition, offset)])
        return offset

    def replay_boundary(
        self, consumer: Consumer, topic: str, partition: int, snapshotted: int
    ) -> int:
        """A reference partition re-read from its beginning: the snapshotted offset below
        which records were seen before, checked against what the topic still holds."""
        if snapshotted <= 0:
            return snapshotted
        low, high = self._watermarks(consumer, topic, partition)
        if low <= snapshotted <= high:
            return snapshotted
        return restart_offset(
            self._settings.offset_reset_policy,
            "read up to",
            topic,
            partition,
            snapshotted,
            low,
            high,
        )

    def release(self) -> None:
        self._watch.release()
