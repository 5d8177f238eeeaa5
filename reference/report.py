"""What a load did: running counts, progress lines while it runs, a report when it ends."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

from reference.reader import NOT_FINITE, Record
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
    held_back: int = 0
    """Rows held back: decode would refuse a value (`reference.reader.RowKind.HELD_BACK`)."""
    held_back_by_rule: dict[str, int] = field(default_factory=dict)
    """`held_back` by rule: `not_finite`, or the reason decode would dead-letter the row with."""


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
            f"  held back          {counts.held_back:>12,}  (not published{_by_rule(counts)})",
            f"  watermark          {self.watermark}",
        ]
        return "\n".join(lines)


def _by_rule(counts: LoadCounts) -> str:
    """`: rule count, ...` for the report's held-back line; empty when none were."""
    rules = sorted(counts.held_back_by_rule.items())
    return ": " + ", ".join(f"{rule} {count:,}" for rule, count in rules) if rules else ""


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
class HeldBackLog:
    """Rows held back because decode would refuse a value, logged so a person can fix them.

    One warning per column and rule each load, naming the first key (a table
    with one bad column could otherwise log a line per row), then one line
    with the rows per column when the load ends; every row is counted in
    `LoadCounts`.
    """

    columns: dict[str, int] = field(default_factory=dict)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def add(self, record: Record) -> None:
        column, rule = record.column, record.rule
        self.columns[column] = self.columns.get(column, 0) + 1
        if (column, rule) in self._seen:
            return
        self._seen.add((column, rule))
        key = (record.key or b"").decode(errors="replace")
        reason = "invalid_json" if rule == NOT_FINITE else rule
        log.warning(
            f"row {key!r}: column {column!r} holds {_shown(record.bad_value)}: {record.detail}; "
            f"the dataflow would dead-letter the record as {reason}, so the row is not "
            "published and the topic keeps the key's earlier record. Store a value the "
            "lookup's declared columns accept (a finite number, text up to the limit, the "
            "declared type) or NULL: the row goes out when its change column next moves, or "
            f"with the next full load. Further such rows ({rule}, {column!r}) are only counted",
            extra={"key": key, "column": column, "rule": rule},
        )

    def finish(self) -> None:
        if not self.columns:
            return
        total = sum(self.columns.values())
        per_column = ", ".join(f"{name} {count:,}" for name, count in self.columns.items())
        log.warning(
            f"{total:,} rows were not published: the dataflow's decode would refuse a value "
            f"(rows per column: {per_column}); fix them in the table (a warning per column above)",
            extra={"held_back": total, "held_back_columns": dict(self.columns)},
        )


def _shown(value: object) -> str:
    """The value for a log line, cut short: a refused text can be thousands of characters."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:50]}... ({len(text):,} characters)"
