"""Test-only entry point: the demo dataflow whose sink dies once between write and commit.

    python -m bytewax.run tests/crash_before_commit.py -r DIR -s 0 -b 0

The production sink, with its dialect wrapped: while the file `CRASH_MARKER`
names does not exist, the `CRASH_AT_WRITE`-th write of the enriched table
creates it, listing the event ids that write sent, and ends the process with
`os._exit(CRASH_EXIT_CODE)` after `executemany` and before the commit, as a
kill would. With the marker in place the dataflow runs as the real one does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataflows.flow import build_flow, main_sink
from dataflows.settings import load_settings
from sinks.dialect import Dialect, RowError
from sinks.table import EnrichedTable, Table


@dataclass
class DieBeforeCommit:
    inner: Dialect[Any]
    marker: Path
    at_write: int
    exit_code: int
    writes: int = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write(self, conn: Any, table: Table, rows: Sequence[Sequence[Any]]) -> list[RowError]:
        refused = self.inner.write(conn, table, rows)
        if isinstance(table, EnrichedTable) and not self.marker.exists():
            self.writes += 1
            if self.writes == self.at_write:
                self.marker.write_text(json.dumps([row[0] for row in rows]))
                os._exit(self.exit_code)
        return refused


settings = load_settings()
sink = main_sink(settings)
sink.dialect = DieBeforeCommit(
    sink.dialect,
    Path(os.environ["CRASH_MARKER"]),
    int(os.environ["CRASH_AT_WRITE"]),
    int(os.environ["CRASH_EXIT_CODE"]),
)
flow = build_flow(settings, sink=sink)
