"""The Quix Streams contender of bench/bench_lean.py: `join_asof`, no database.

    QUIX_PYTHON bench/lean_quix.py BOOTSTRAP EVENTS   # prints {"rate": ..., "misses": ...}

Runs in an interpreter of its own that has quixstreams (which needs a
confluent-kafka older than the one this project pins), so it imports nothing
of the project. Events are joined with the latest reference row of the same
key whose Kafka timestamp is not later than the event's; bench_kafka's `fill`
writes every reference row before the first event. Timed like the other
contenders: from the first event through the join to the last.

librdkafka's mock cluster does not answer the admin requests Quix makes at
start (DescribeConfigs for every topic, CreateTopics for changelogs: "Failed
while waiting for controller"), so `_topics_from_metadata` answers the first
from the cluster's metadata (partitions and replicas, which is what Quix
checks: that joined topics are co-partitioned) and the state store runs
without changelog topics. Reading, the join and its RocksDB state are Quix's.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from typing import Any


def _topics_from_metadata() -> None:
    """Topic configs from metadata instead of DescribeConfigs, which the mock cluster lacks."""
    from quixstreams.models.topics import TopicConfig
    from quixstreams.models.topics.admin import TopicAdmin

    def inspect_topics(self: Any, topic_names: list[str], timeout: float = 30) -> dict[str, Any]:
        known = self.list_topics(timeout=timeout)
        configs: dict[str, Any] = {}
        for name in topic_names:
            meta = known.get(name)
            configs[name] = None
            if meta is not None:
                replicas = len(next(iter(meta.partitions.values())).replicas)
                configs[name] = TopicConfig(
                    num_partitions=len(meta.partitions),
                    replication_factor=replicas,
                    # The mock cluster keeps what it keeps; Quix sizes its store's topic by these.
                    extra_config={"retention.ms": "-1", "retention.bytes": "-1"},
                )
        return configs

    TopicAdmin.inspect_topics = inspect_topics


def main(bootstrap: str, events: int) -> dict[str, float]:
    from quixstreams import Application

    _topics_from_metadata()

    seen = {"events": 0, "misses": 0, "first": 0.0, "last": 0.0}

    def count(value: Any) -> None:
        if not seen["first"]:
            seen["first"] = time.perf_counter()
        seen["events"] += 1
        seen["misses"] += "cusip" not in value
        seen["last"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as state:
        app = Application(
            broker_address=bootstrap,
            consumer_group=f"bench-lean-{uuid.uuid4()}",
            auto_offset_reset="earliest",
            state_dir=state,
            loglevel="WARNING",
            use_changelog_topics=False,
        )
        quotes = app.dataframe(app.topic("events", value_deserializer="json"))
        rows = app.dataframe(app.topic("reference", value_deserializer="json"))
        quotes.join_asof(rows, how="left", on_merge="keep-left").update(count)
        app.run(count=events, timeout=30)
    if seen["events"] != events:
        raise SystemExit(f"Quix Streams: {seen['events']} of {events} events joined")
    return {
        "rate": events / (seen["last"] - seen["first"]),
        "misses": seen["misses"] / events,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]))))
