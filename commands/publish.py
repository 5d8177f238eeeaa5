"""`enrich publish`: publish the reference table to the compacted reference topic.

    enrich publish                 # once (unless ENRICH_PUBLISH_INTERVAL_SECONDS)
    enrich publish --interval 60   # a load every 60 s until SIGTERM
    enrich publish --full          # a full load first, e.g. after the nightly reload
    enrich publish --full --allow-mass-delete   # the deletes are meant

Exit status: 0 when the last load finished, 1 when it failed (the watermark
covers only what Kafka confirmed), 2 for bad settings or arguments (also a
Kafka property librdkafka refuses, named without its value, and a
column the table lacks), 3 when a full load would have tombstoned more than
ENRICH_PUBLISH_MAX_DELETE_SHARE of the topic's live keys and published
nothing, 4 when the last load finished but held rows back because the
dataflow's decode would refuse a value (NaN or infinite, beyond 64 bits, text
too long, not the declared type; each column logged with a key). The brokers
refusing to show or raise an as-of lookup's `min.compaction.lag.ms` is a
configuration problem too: exit 2, with the command that sets it.
SIGTERM ends the process after the load under way, never in the
middle of one.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from config.base import exit_on_bad_settings
from dataflows.settings import load_settings
from reference.compaction import LagRefused
from reference.guard import MassDeleteRefused
from reference.load import Publisher
from reference.settings import PublisherSettings
from sources.kafka_errors import KafkaConfigRefused
from telemetry.logging import start_logging

log = logging.getLogger("enrich.publisher")


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="enrich publish",
        description="Publish the reference table to the reference topic (full, then incremental).",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="one load, then exit (the default)")
    mode.add_argument(
        "--interval",
        type=float,
        metavar="SECONDS",
        help="a load every SECONDS until SIGTERM (overrides ENRICH_PUBLISH_INTERVAL_SECONDS)",
    )
    parser.add_argument(
        "--full", action="store_true", help="start with a full load whatever the watermark"
    )
    parser.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="let a full load tombstone more than ENRICH_PUBLISH_MAX_DELETE_SHARE of the "
        "topic's live keys (as ENRICH_PUBLISH_ALLOW_MASS_DELETE=true)",
    )
    args = parser.parse_args(argv)
    if args.interval is not None and args.interval <= 0:
        parser.error("--interval must be more than 0 seconds")
    return args


def _stop_on_sigterm() -> threading.Event:
    """Only sets an event: logging from a signal handler could re-enter a write to stderr."""
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    return stop


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    overrides = {"publish_allow_mass_delete": True} if args.allow_mass_delete else {}
    with exit_on_bad_settings():
        settings = load_settings(PublisherSettings, **overrides)
    start_logging(settings)
    interval = None if args.once else (args.interval or settings.publish_interval_seconds)
    stop = _stop_on_sigterm()
    publisher = Publisher(settings)
    full = args.full
    held_back = False
    while True:
        try:
            with exit_on_bad_settings():
                report = publisher.load(full)
        except MassDeleteRefused as exc:
            log.error("%s", exc, extra=exc.fields)
            return 3
        except LagRefused as exc:
            # Only a person can set the topic's lag or grant the right to: no retry.
            log.error("%s", exc, extra=exc.fields)
            return exc.exit_code
        except KafkaConfigRefused as exc:
            # A refused property is a bad setting: no later load can go better.
            print(exc, file=sys.stderr)
            return exc.exit_code
        except Exception:
            log.exception("the load failed; the watermark covers only what was confirmed")
            failed = True
        else:
            print(report.summary(), flush=True)
            failed = full = False
            held_back = report.counts.held_back > 0
        if interval is None or stop.wait(interval):
            if stop.is_set():
                log.info("SIGTERM: stopped after the load under way")
            return 1 if failed else 4 if held_back else 0
