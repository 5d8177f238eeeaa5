"""Kafka faults the dataflow cannot go on with, each with a message a person can act on.

Every one of them is raised with a message that names the brokers, topic or
partition involved and what to do, and never a configuration value (which may
be a secret). The entry point turns them into that message and a non-zero
exit instead of a traceback (`dataflows/exits.py`).
"""

from __future__ import annotations


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
