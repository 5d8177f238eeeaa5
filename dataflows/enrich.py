"""Entry point: `python -m bytewax.run dataflows.enrich`.

Reads settings from the environment, refusing to start on a bad one or when
Kafka or the metrics port is not ready (dataflows/start_checks.py), then
exposes `flow` for Bytewax to run.
"""

from __future__ import annotations

import gc
import sys

from dataflows import exits
from dataflows.flow import build_flow
from dataflows.settings import SettingsError, load_settings
from dataflows.start_checks import check_start
from telemetry.logging import start_logging
from telemetry.progress import Progress

try:
    settings = load_settings()
except SettingsError as exc:
    print(exc, file=sys.stderr)
    raise SystemExit(2) from None

start_logging(settings)
exits.install()
check_start(settings)
if settings.gc_gen0_threshold:
    # Every event allocates a few short-lived objects; Python's default of 700
    # allocations per young collection makes the collector a large share of
    # the hot path (docs/BENCHMARKS.md).
    gc.set_threshold(settings.gc_gen0_threshold, *gc.get_threshold()[1:])
Progress(settings.progress_seconds).start()
flow = build_flow(settings)
