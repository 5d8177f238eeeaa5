"""Watching the cluster while the dataflow runs: quiet brokers and changed topic layouts.

One watch per process and cluster asks for the whole cluster's metadata every
`check_seconds` in a daemon thread (one small request, whatever the number of
partitions). From the answers it knows:

- how long no broker has answered: after `quiet_seconds` it warns, naming the
  brokers and how long, again every ten times that while it lasts, and says
  when they are back; `enrich_kafka_unanswered_seconds` shows it. librdkafka
  keeps retrying all along, so nothing is lost: the warning is for people.
- whether a topic read still has the partitions the dataflow was built on.
  Bytewax cannot rebalance a running dataflow, so a topic that gained or lost
  partitions, or disappeared, becomes a `LayoutChanged` that the sources raise
  on their next batch: the dataflow stops loudly and the orchestrator restarts
  it on the new layout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar

from confluent_kafka import KafkaError, KafkaException

from sources.kafka_admin import admin_client
from sources.kafka_errors import LayoutChanged
from telemetry import metrics

log = logging.getLogger("enrich.kafka")

REPEAT_FACTOR = 10
"""While brokers stay silent the warning comes again every this many quiet times."""
_MAX_REQUEST_SECONDS = 10.0
_NO_ERROR = "requests time out"


class ClusterWatch:
    """Knows when a broker last answered and whether the followed topics kept their layout.

    `check` does one round; the thread calls it every `check_seconds`. Tests
    may call it directly with their own clock.
    """

    _shared: ClassVar[dict[tuple[str, ...], ClusterWatch]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        brokers: Iterable[str],
        config: Mapping[str, str],
        check_seconds: float,
        quiet_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.brokers = list(brokers)
        self._errors: list[KafkaError] = []
        self._admin = admin_client(self.brokers, config, self._errors)
        self._check_seconds = check_seconds
        self._quiet_seconds = quiet_seconds
        self._clock = clock
        self._layout: dict[str, int] = {}
        self._last_answer = clock()
        self._warned_at: float | None = None
        self._last_error = _NO_ERROR
        self._users = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.problem: LayoutChanged | None = None
        """Set once a followed topic changed; the sources raise it."""

    @classmethod
    def shared(
        cls,
        brokers: Iterable[str],
        config: Mapping[str, str],
        check_seconds: float,
        quiet_seconds: float,
    ) -> ClusterWatch:
        """The process's watch of these brokers, made and started on first use."""
        key = tuple(brokers)
        with cls._shared_lock:
            watch = cls._shared.get(key)
            if watch is None:
                watch = cls._shared[key] = cls(key, config, check_seconds, quiet_seconds)
            watch._users += 1
            if watch._thread is None:
                watch._thread = threading.Thread(
                    target=watch._run, name="enrich-kafka-watch", daemon=True
                )
                watch._thread.start()
            return watch

    def release(self) -> None:
        """One user fewer; the last one stops the thread."""
        with self._shared_lock:
            self._users -= 1
            if self._users > 0:
                return
            if self._shared.get(tuple(self.brokers)) is self:
                del self._shared[tuple(self.brokers)]
        self._stop.set()

    def follow(self, topic: str, partitions: int) -> None:
        """Watch `topic`, which the dataflow was built with `partitions` partitions of."""
        self._layout[topic] = partitions

    def _run(self) -> None:
        while not self._stop.wait(self._check_seconds):
            self.check()

    def check(self) -> None:
        """Ask for the cluster's metadata once and act on the answer or its absence."""
        timeout = min(self._check_seconds, _MAX_REQUEST_SECONDS)
        try:
            metadata = self._admin.list_topics(timeout=timeout)
        except KafkaException:
            self._unanswered()
            return
        self._answered()
        listing = {name: len(topic.partitions) for name, topic in metadata.topics.items()}
        for topic, partitions in list(self._layout.items()):
            self._compare(topic, partitions, listing.get(topic))

    def _answered(self) -> None:
        now = self._clock()
        if self._warned_at is not None:
            log.warning(
                "Kafka brokers %s answer again after %.0f s without an answer",
                ", ".join(self.brokers),
                now - self._last_answer,
            )
        self._last_answer = now
        self._warned_at = None
        self._drain_errors()
        self._last_error = _NO_ERROR
        metrics.KAFKA_UNANSWERED_SECONDS.set(0)

    def _drain_errors(self) -> None:
        """Serve librdkafka's queued error reports, keeping only the latest one's text."""
        self._admin.poll(0)
        if self._errors:
            self._last_error = self._errors[-1].str()
            self._errors.clear()

    def _unanswered(self) -> None:
        self._drain_errors()
        now = self._clock()
        silent = now - self._last_answer
        metrics.KAFKA_UNANSWERED_SECONDS.set(silent)
        if silent < self._quiet_seconds:
            return
        if self._warned_at is not None and now - self._warned_at < (
            REPEAT_FACTOR * self._quiet_seconds
        ):
            return
        log.warning(
            "no Kafka broker of %s has answered for %.0f s (last error: %s); the dataflow "
            "keeps retrying and loses nothing, but reads nothing either: check the brokers "
            "and the network between them and this process",
            ", ".join(self.brokers),
            silent,
            self._last_error,
        )
        self._warned_at = now

    def _compare(self, topic: str, expected: int, now: int | None) -> None:
        if now == expected or self.problem is not None:
            return
        found = "no longer exists" if now is None else f"now has {now} partitions"
        self.problem = LayoutChanged(
            f"Kafka topic {topic!r} had {expected} partitions when the dataflow started and "
            f"{found}. Bytewax cannot rebalance a running dataflow: it stops so that a "
            "restart reads the new layout (docs/OPERATIONS.md, adding partitions)."
        )
        log.error("%s", self.problem)
