"""Entry point: `python -m bytewax.run dataflows.enrich`.

Reads settings from the environment, refusing to start on a bad one, then
exposes `flow` for Bytewax to run.
"""

from __future__ import annotations

import logging
import sys

from dataflows.flow import build_flow
from dataflows.settings import SettingsError, load_settings
from telemetry.progress import Progress

try:
    settings = load_settings()
except SettingsError as exc:
    print(exc, file=sys.stderr)
    raise SystemExit(2) from None

logging.basicConfig(
    level=settings.log_level,
    format="%(asctime)s %(levelname)s %(name)s %(message)s",
    stream=sys.stderr,
)
Progress(settings.progress_seconds).start()
flow = build_flow(settings)
