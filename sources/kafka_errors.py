"""Kafka faults the dataflow cannot go on with, each with a message a person can act on.

Every one of them is raised with a message that names the brokers, topic or
partition involved and what to do, and never a configuration value (which may
be a secret). At start, `exit_on_kafka_fault` turns them into that message
and a non-zero exit; a fault that stops a running dataflow is printed by the
hook in `dataflows/stopping.py`. Neither shows a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class KafkaFault(RuntimeError):
    """The dataflow stops: `str(exc)` is the whole message, `exit_code` the status."""

    exit_code = 1


class BrokersUnreachable(KafkaFault):
    """No broker answered a metadata request within the start-up time."""


class MissingTopics(KafkaFault):
    """A topic the dataflow reads does not exist; refused like a bad setting."""

    exit_code = 2


class KafkaConfigRefused(KafkaFault):
    """librdkafka refused a property of `ENRICH_KAFKA_CONFIG`; refused like a bad setting."""

    exit_code = 2


class OffsetsLost(KafkaFault):
    """The offset a partition resumes at is no longer in the topic."""


class LayoutChanged(KafkaFault):
    """A topic read gained or lost partitions, or disappeared, while the dataflow ran."""


INTERRUPTED_EXIT = 130
"""Ctrl-C while a program still waits for Kafka: the shell's status for SIGINT."""


@contextmanager
def exit_on_kafka_fault(interrupted: str) -> Iterator[None]:
    """A program's start against Kafka: a fault prints its message and exits with its status;
    Ctrl-C prints `interrupted` and exits 130. No traceback either way."""
    try:
        yield
    except KafkaFault as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        raise SystemExit(INTERRUPTED_EXIT) from None
