"""Questions asked of the Kafka cluster itself, always with a deadline.

Bytewax's own partition listing asks for metadata with no timeout, so
unreachable brokers hang start-up for ever, and asks for each topic by name,
which makes brokers that allow it create a misspelled topic. Here metadata is
always the whole cluster's listing (asking for no topic by name never creates
one), asked in one-second slices until a deadline, so Ctrl-C is seen between
slices and the caller gets an error naming the brokers instead of a hang.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from sources.kafka_errors import BrokersUnreachable, KafkaConfigRefused, MissingTopics
from telemetry.kafka_logs import logged

_SLICE_SECONDS = 1.0
"""One metadata request waits at most this long, so a signal is handled within it."""
HIDDEN = "<hidden>"


def _redacted(text: str, config: Mapping[str, str]) -> str:
    """`text` with every configured value replaced, longest first: a value may be a secret."""
    for value in sorted({v for v in config.values() if v}, key=len, reverse=True):
        text = text.replace(value, HIDDEN)
    return text


def _culprits(text: str, config: Mapping[str, str]) -> list[str]:
    """The properties a librdkafka error is about: named in it, or whose value it quotes."""
    return [
        name for name, value in config.items() if name in text or (len(value) > 2 and value in text)
    ]


@contextmanager
def config_checked(config: Mapping[str, str]) -> Iterator[None]:
    """Turn librdkafka's refusal of a client's configuration into `KafkaConfigRefused`.

    librdkafka's message may quote the value ("Unsupported SASL mechanism:
    <value>") without naming the property, so the property is the one named or
    quoted, and the message is reported with every configured value hidden.
    The original exception is not chained: it holds the value.
    """
    try:
        yield
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if not isinstance(error, KafkaError) or error.code() != KafkaError._INVALID_ARG:
            raise
        text = error.str()
        culprits = _culprits(text, config)
        named = (
            f"property {', '.join(repr(name) for name in culprits)}"
            if culprits
            else "the configuration (no property of ENRICH_KAFKA_CONFIG is named)"
        )
        raise KafkaConfigRefused(
            f"ENRICH_KAFKA_CONFIG: librdkafka refused {named}, value not shown: "
            f"{_redacted(text, config)}"
        ) from None


def admin_client(
    brokers: Iterable[str], config: Mapping[str, str], errors: list[KafkaError]
) -> AdminClient:
    """An admin client on the dataflow's connection settings, a refused configuration
    reported safely; `errors` collects what librdkafka reports while it is polled."""
    with config_checked(config):
        return AdminClient(
            # librdkafka takes callbacks among the properties; the stubs allow only values.
            logged({"bootstrap.servers": ",".join(brokers), **config, "error_cb": errors.append})
        )


def _last_error(admin: AdminClient, errors: list[KafkaError], config: Mapping[str, str]) -> str:
    admin.poll(0)
    return _redacted(errors[-1].str(), config) if errors else "no answer"


def list_cluster(
    brokers: Iterable[str],
    config: Mapping[str, str],
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, int]:
    """Every topic of the cluster and its partition count, or `BrokersUnreachable`.

    Asked in slices of at most a second until `timeout` has passed, so
    KeyboardInterrupt (and any other signal handler) runs between slices.
    """
    brokers = list(brokers)
    errors: list[KafkaError] = []
    admin = admin_client(brokers, config, errors)
    deadline = clock() + timeout
    while True:
        try:
            metadata = admin.list_topics(timeout=max(0.01, min(_SLICE_SECONDS, deadline - clock())))
        except KafkaException:
            if clock() < deadline:
                continue
            raise BrokersUnreachable(
                f"no Kafka broker of {', '.join(brokers)} (ENRICH_KAFKA_BROKERS) answered a "
                f"metadata request within {timeout:g} s (ENRICH_KAFKA_START_TIMEOUT_SECONDS); "
                f"last error: {_last_error(admin, errors, config)}. Check that the brokers run "
                "and are reachable from here, and the security settings in ENRICH_KAFKA_CONFIG."
            ) from None
        return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def require_topics(listing: Mapping[str, int], topics: Mapping[str, str]) -> None:
    """Raise `MissingTopics` naming every topic read (`topics`: name → setting) not listed."""
    missing = [f"{name!r} ({setting})" for name, setting in topics.items() if name not in listing]
    if missing:
        raise MissingTopics(
            f"Kafka topic {', '.join(missing)} does not exist; the dataflow reads only topics "
            "that exist and never relies on auto-creation. Create it, or fix the setting."
        )
