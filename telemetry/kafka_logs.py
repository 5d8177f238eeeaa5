"""librdkafka's own log lines through Python logging, as every other line.

Without a `logger`, librdkafka writes its lines (`%3|...|FAIL|rdkafka#...`)
straight to stderr: not in the JSON format a log collector was promised, and
past the formatter that scrubs secret values (`telemetry.logging`). Handed a
logger, confluent-kafka passes each line to it while the client is polled,
at the Python level matching librdkafka's syslog level.
"""

from __future__ import annotations

import logging
from typing import Any

KAFKA_LOG = logging.getLogger("enrich.kafka")


def logged(config: dict[str, Any]) -> dict[str, Any]:
    """`config` for a confluent-kafka client, its library's log lines sent to `KAFKA_LOG`."""
    return {**config, "logger": KAFKA_LOG}
