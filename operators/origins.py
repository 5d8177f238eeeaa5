"""Where a record came from, as the text its `origin` field holds."""

from __future__ import annotations


def parse_origin(text: str) -> tuple[str, int, int] | None:
    """Topic, partition and offset of a Kafka origin; None for other sources."""
    source, _, rest = text.partition("/")
    topic, _, position = rest.rpartition("/")
    topic, _, partition = topic.rpartition("/")
    if source != "kafka" or not topic or not partition.isdigit() or not position.isdigit():
        return None
    return topic, int(partition), int(position)
