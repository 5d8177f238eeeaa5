"""Entry point: `python -m bytewax.run dataflows.enrich`.

Reads settings from the environment, refusing to start on a bad one, then
exposes `flow` for Bytewax to run.
"""

from __future__ import annotations

import gc

from dataflows.flow import build_flow
from dataflows.recovery_guard import refuse_unsafe_store
from dataflows.settings import check_dataflow, exit_on_bad_settings, load_settings
from telemetry.logging import start_logging
from telemetry.progress import Progress

with exit_on_bad_settings():
    settings = load_settings()
    check_dataflow(settings)

start_logging(settings)
if settings.gc_gen0_threshold:
    # Every event allocates a few short-lived objects; Python's default of 700
    # allocations per young collection makes the collector a large share of
    # the hot path (docs/BENCHMARKS.md).
    gc.set_threshold(settings.gc_gen0_threshold, *gc.get_threshold()[1:])
Progress(settings.progress_seconds).start()
flow = build_flow(settings)
refuse_unsafe_store(flow, settings)
