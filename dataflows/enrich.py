"""Entry point: `python -m bytewax.run dataflows.enrich`.

Reads settings from the environment, refusing to start on a bad one (exit 2),
on a SQLite path it cannot write (exit 1), or when Kafka or the metrics port
is not ready (dataflows/start_checks.py), then exposes `flow` for Bytewax to
run. SIGINT and SIGTERM stop a running flow with the summary and exit 0.

Importing the module does none of this: Bytewax reads the attribute `flow`
(`getattr(module, "flow")`), and only then is the flow built, so a test or a
tool may import it freely.
"""

from __future__ import annotations

import gc
import sys

from bytewax.dataflow import Dataflow

from config.base import exit_on_bad_settings
from dataflows import database
from dataflows.flow import build_flow
from dataflows.recovery_guard import refuse_unsafe_store
from dataflows.run_args import recovery_enabled
from dataflows.settings import check_dataflow, load_settings
from dataflows.start_checks import check_start
from dataflows.stopping import explain_stopping_errors, stop_on_signals
from telemetry.logging import start_logging
from telemetry.progress import Progress


def start() -> Dataflow:
    """Settings, logging, start-up checks, the progress thread and signals; then the flow."""
    with exit_on_bad_settings():
        settings = load_settings()
        check_dataflow(settings)

    start_logging(settings)
    explain_stopping_errors()
    events_partitions = check_start(settings)
    if settings.gc_gen0_threshold:
        # Every event allocates a few short-lived objects; Python's default of 700
        # allocations per young collection makes the collector a large share of
        # the hot path (docs/BENCHMARKS.md).
        gc.set_threshold(settings.gc_gen0_threshold, *gc.get_threshold()[1:])
    problem = database.cannot_open(settings)
    if problem:
        print(f"enrich: {problem}", file=sys.stderr)
        raise SystemExit(1)
    recovery = recovery_enabled()
    progress = Progress(settings.progress_seconds)
    progress.start()
    stop_on_signals(progress.finish, recovery)
    flow = build_flow(settings, recovery=recovery, event_partitions=events_partitions)
    refuse_unsafe_store(flow, settings)
    return flow


def __getattr__(name: str) -> Dataflow:
    """`flow`, built on first use (by `python -m bytewax.run dataflows.enrich`), then kept."""
    if name != "flow":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        built = start()
    except AttributeError as exc:
        # Bytewax would report an AttributeError here as "no attribute flow".
        raise RuntimeError(f"building the dataflow failed: {exc}") from exc
    globals()["flow"] = built
    return built
