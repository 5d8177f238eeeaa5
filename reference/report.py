"""What a load did: running counts, progress lines while it runs, a report when it ends."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

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
