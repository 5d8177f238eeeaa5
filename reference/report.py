"""What a load did: running counts, progress lines while it runs, a report when it ends."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

from reference.reader import Record
from reference.watermark import Watermark

log = logging.getLogger("enrich.publisher")


@dataclass
class LoadCounts:
    read: int = 0
    published: int = 0
    tombstones: int = 0
    filtered_out: int = 0
    soft_deleted: int = 0
    without_key: int = 0
    not_finite: int = 0
    """Rows held back: a value is NaN or infinite (`reference.reader.RowKind.NOT_FINITE`)."""


@dataclass(frozen=True)
class LoadReport:
    full: bool
    counts: LoadCounts
    watermark: Watermark | None
    seconds: float

    def summary(self) -> str:
        counts, seconds = self.counts, max(self.seconds, 1e-9)
        lines = [
            f"reference load ({'full' if self.full else 'incremental'})",
            f"  rows read          {counts.read:>12,}  in {self.seconds:.1f} s "
            f"({counts.read / seconds:,.0f} rows/s)",
            f"  rows published     {counts.published:>12,}",
            f"  tombstones         {counts.tombstones:>12,}",
            f"  filtered out       {counts.filtered_out:>12,}",
            f"  soft deleted       {counts.soft_deleted:>12,}",
            f"  without a key      {counts.without_key:>12,}",
            f"  NaN or infinite    {counts.not_finite:>12,}  (not published)",
            f"  watermark          {self.watermark}",
        ]
        return "\n".join(lines)


@dataclass
class ProgressLog:
    """Logs the counts every `interval` seconds (never when 0); its numbers travel as fields."""

    what: str
    counts: LoadCounts
    interval: float
    _last_time: float = field(default_factory=time.monotonic)
    _last_read: int = 0

    def tick(self) -> None:
        now = time.monotonic()
        if self.interval <= 0 or now - self._last_time < self.interval:
            return
        counts = self.counts
        fields = asdict(counts)
        fields["rows_per_second"] = round((counts.read - self._last_read) / (now - self._last_time))
        self._last_time, self._last_read = now, counts.read
        log.info(
            f"{self.what}: read {counts.read:,} rows ({fields['rows_per_second']:,}/s), "
            f"published {counts.published:,}, tombstones {counts.tombstones:,}, "
            f"filtered out {counts.filtered_out:,}",
            extra=fields,
        )


@dataclass
class NotFiniteLog:
    """Rows held back because a value is NaN or infinite, logged so a person can fix them.

    One warning per column and load, naming the first key (a table with one bad
    column could otherwise log a line per row), then one line with the total
    per column when the load ends; every row is counted in `LoadCounts`.
    """

    columns: dict[str, int] = field(default_factory=dict)

    def add(self, record: Record) -> None:
        column = record.column
        seen = self.columns.get(column, 0)
        self.columns[column] = seen + 1
        if seen:
            return
        key = (record.key or b"").decode(errors="replace")
        log.warning(
            f"row {key!r}: column {column!r} holds {record.bad_value!r}, a NaN or infinite "
            "value JSON cannot carry (the dataflow would dead-letter the record as invalid_json); "
            "the row is not published and the topic keeps the key's earlier record. Store a "
            "finite number or NULL: the row goes out when its change column next moves, or "
            f"with the next full load. Further rows with such a {column!r} are only counted",
            extra={"key": key, "column": column},
        )

    def finish(self) -> None:
        if not self.columns:
            return
        total = sum(self.columns.values())
        per_column = ", ".join(f"{name} {count:,}" for name, count in self.columns.items())
        log.warning(
            f"{total:,} rows were not published: a value is NaN or infinite "
            f"(rows per column: {per_column}); fix them in the table (a warning per column above)",
            extra={"not_finite": total, "not_finite_columns": dict(self.columns)},
        )
