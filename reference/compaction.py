"""An as-of lookup's reference topic must keep its history: `min.compaction.lag.ms`.

An as-of lookup joins the version of a row valid at an event's time, from a
per-key history the dataflow rebuilds on every start by re-reading the topic.
Compaction keeps only the latest record of a key once a record is older than
the topic's `min.compaction.lag.ms` (broker default 0), so with a lag shorter
than the lookup's history window a restart rebuilds less history than the
lookup promises. Before each load the publisher reads the topic's value and
raises it to the window where it is lower.

The two admin calls go through `TopicConfigs`, so the decision is tested with
a fake admin: librdkafka's mock cluster, the test suite's Kafka, answers
neither (tests/test_compaction_lag.py says how it fails).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from enum import Enum
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from config.lookups import Lookup
from sources.kafka_errors import KafkaFault

log = logging.getLogger("enrich.publisher")

LAG = "min.compaction.lag.ms"
REQUEST_TIMEOUT_SECONDS = 30.0
"""How long one admin request may take, broker lookup included."""

_REFUSALS = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError._UNSUPPORTED_FEATURE,
        KafkaError.UNSUPPORTED_VERSION,
        KafkaError.INVALID_REQUEST,
        KafkaError.INVALID_CONFIG,
        KafkaError.POLICY_VIOLATION,
        KafkaError.SECURITY_DISABLED,
    }
)
"""Answers no retry changes (not allowed, not supported, not accepted): a person must act."""
_NO_TOPIC = frozenset({KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC})


class TopicConfigs(Protocol):
    """The two calls of confluent-kafka's `AdminClient` this module makes."""

    def describe_configs(
        self, resources: list[ConfigResource], **kwargs: Any
    ) -> dict[ConfigResource, Future[Any]]: ...

    def incremental_alter_configs(
        self, resources: list[ConfigResource], **kwargs: Any
    ) -> dict[ConfigResource, Future[Any]]: ...


class LagRefused(KafkaFault):
    """The brokers refuse to show or set the topic's lag: exit 2, like a bad setting,
    since no later load can go better until a person sets it or grants the right."""

    exit_code = 2

    def __init__(self, message: str, topic: str, needed_ms: int) -> None:
        super().__init__(message)
        self.fields = {"topic": topic, "min_compaction_lag_ms": needed_ms}


class LagUnknown(RuntimeError):
    """The brokers did not answer in time: the load fails (exit 1) and the next one retries."""


class Lag(Enum):
    """What a check found."""

    KEPT = "kept"
    """The topic's value was already at least the window."""
    RAISED = "raised"
    """It was lower (or unset) and is now the window."""
    NO_TOPIC = "no topic"
    """The topic does not exist yet; nothing was set."""


def needed_lag_ms(lookup: Lookup) -> int | None:
    """The least `min.compaction.lag.ms` `lookup` needs: its history window; None for latest."""
    if lookup.mode != "as_of":
        return None
    return math.ceil(lookup.history_seconds * 1000)


def operator_command(brokers: Iterable[str], topic: str, lag_ms: int) -> str:
    """What an operator runs to set the lag (with `--command-config` on a secured cluster)."""
    return (
        f"kafka-configs.sh --bootstrap-server {','.join(brokers)} --alter --entity-type topics "
        f"--entity-name {topic} --add-config {LAG}={lag_ms}"
    )


def ensure_history_kept(
    admin: TopicConfigs,
    brokers: Iterable[str],
    topic: str,
    lookup: Lookup,
    timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> Lag | None:
    """Raise `topic`'s `min.compaction.lag.ms` to `lookup`'s history window if it is lower.

    None for a latest-mode lookup, which needs no history: the brokers are not
    asked. Raises `LagRefused` when they refuse to show or set the value, and
    `LagUnknown` when they do not answer within `timeout`.
    """
    needed = needed_lag_ms(lookup)
    if needed is None:
        return None
    brokers = list(brokers)
    command = operator_command(brokers, topic, needed)
    seconds = lookup.history_seconds
    why = (
        f"lookup {lookup.name!r} is as_of with a history of "
        f"{int(seconds) if seconds.is_integer() else seconds:,} s (history_seconds), and "
        "compaction must keep every version that young for the dataflow to rebuild that "
        "history from the topic on a restart"
    )
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        configs = _answer(
            lambda: admin.describe_configs([resource], request_timeout=timeout), timeout
        )
    except _AdminError as exc:
        if exc.missing:
            log.warning(
                "Kafka topic %r does not exist yet: the publisher creates no topic. If this "
                "load's records create it (brokers that auto-create topics do, with their "
                "defaults), its %s is set to %s after the load (%s). Better create it "
                "compacted: kafka-topics.sh --bootstrap-server %s --create --topic %s "
                "--config cleanup.policy=compact --config %s=%s",
                topic,
                LAG,
                needed,
                why,
                ",".join(brokers),
                topic,
                LAG,
                needed,
                extra={"topic": topic, "min_compaction_lag_ms": needed},
            )
            return Lag.NO_TOPIC
        raise exc.fault(
            topic,
            needed,
            f"read {LAG} of Kafka topic {topic!r}",
            f"it must be at least {needed} ms: {why}",
            f"set it with `{command}`, and let the publisher's Kafka user describe the "
            "topic's configuration (DescribeConfigs), so that it can check",
        ) from None
    current = _lag_ms(configs.get(LAG))
    if current >= needed:
        log.debug("Kafka topic %r keeps %s=%s, at least %s", topic, LAG, current, needed)
        return Lag.KEPT
    entry = ConfigEntry(LAG, str(needed), incremental_operation=AlterConfigOpType.SET)
    change = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    try:
        _answer(lambda: admin.incremental_alter_configs([change], request_timeout=timeout), timeout)
    except _AdminError as exc:
        if exc.missing:
            return Lag.NO_TOPIC  # deleted since it was described: the next load tells
        raise exc.fault(
            topic,
            needed,
            f"set {LAG} of Kafka topic {topic!r} to {needed} (it is {current})",
            why,
            f"set it with `{command}`, or let the publisher's Kafka user alter the topic's "
            "configuration (AlterConfigs)",
        ) from None
    log.info(
        "set %s of Kafka topic %r to %s (was %s): %s",
        LAG,
        topic,
        needed,
        current,
        why,
        extra={"topic": topic, "min_compaction_lag_ms": needed, "was_ms": current},
    )
    return Lag.RAISED


class _AdminError(Exception):
    """An admin call's error, as librdkafka gave it."""

    def __init__(self, error: KafkaError | str) -> None:
        super().__init__(error)
        self.text = error.str() if isinstance(error, KafkaError) else error
        self.refused = isinstance(error, KafkaError) and error.code() in _REFUSALS
        self.missing = isinstance(error, KafkaError) and error.code() in _NO_TOPIC

    def fault(
        self, topic: str, needed: int, action: str, why: str, fix: str
    ) -> LagRefused | LagUnknown:
        """The error to stop with: refused (a person must act) or unknown (a retry may do)."""
        if self.refused:
            return LagRefused(
                f"the Kafka brokers refused to {action}: {self.text}. {why[0].upper()}{why[1:]}; "
                f"{fix}.",
                topic,
                needed,
            )
        return LagUnknown(
            f"could not {action}: {self.text}. {why[0].upper()}{why[1:]}. The next load tries "
            f"again; if the brokers never answer this, {fix}."
        )


def _answer(call: Callable[[], dict[ConfigResource, Future[Any]]], timeout: float) -> Any:
    """The answer of an admin call about one resource, or `_AdminError`.

    librdkafka ends the call by its `request_timeout`; the future's own wait
    is a bound beyond that, should it not.
    """
    try:
        (future,) = call().values()
        return future.result(timeout=timeout + 5)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        raise _AdminError(error if isinstance(error, KafkaError) else str(exc)) from None
    except FutureTimeout:
        raise _AdminError("no answer") from None


def _lag_ms(entry: ConfigEntry | None) -> int:
    """The entry's value in ms; absent or unreadable counts as the broker default, 0."""
    try:
        return int(entry.value) if entry is not None and entry.value is not None else 0
    except ValueError:
        return 0
