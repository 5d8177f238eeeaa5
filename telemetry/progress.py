"""Progress lines while the dataflow runs and a summary when the process ends.

Both read the Prometheus registry, so they show exactly what the metrics
endpoint would, for this process.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time

from prometheus_client import Metric
from prometheus_client.registry import Collector

from telemetry import metrics

log = logging.getLogger("enrich.progress")


def _samples(metric: Collector) -> dict[tuple[str, ...], float]:
    """Current values of one metric, keyed by label values; read from the metric itself."""
    values: dict[tuple[str, ...], float] = {}
    for family in metric.collect():
        values.update(_by_labels(family))
    return values


def _by_labels(family: Metric) -> dict[tuple[str, ...], float]:
    values: dict[tuple[str, ...], float] = {}
    for sample in family.samples:
        if sample.name.endswith("_created"):
            continue
        values[tuple(sample.labels.values())] = sample.value
    return values


def _total(metric: Collector) -> int:
    return int(sum(_samples(metric).values()))


PROGRESS_LINE = (
    "events {events:,} ({events_per_second:,}/s) | filtered {filtered:,} | "
    "rows enriched {enriched:,} late {late:,} miss {miss:,} | "
    "dead letters events {dead_letters:,} reference {reference_dead_letters:,} | "
    "pending {pending:,} | rows held {rows_held:,}"
)


def dead_letters_by_kind() -> tuple[dict[str, int], dict[str, int]]:
    """Dead letters by reason: those of events (db_rejected rows too), those of reference records.

    Apart, so that events read = events filtered + events out of the last
    lookup + event dead letters of decode and of earlier lookups; reference
    dead letters are no events. A reference dead letter is counted at decode,
    a moment before the total is, hence the floor at zero mid-run.
    """
    references = {
        reason: int(n) for (reason,), n in _samples(metrics.REFERENCE_DEAD_LETTERS).items()
    }
    events = {
        reason: max(0, int(n) - references.get(reason, 0))
        for (reason,), n in _samples(metrics.DEAD_LETTERS).items()
    }
    return {r: n for r, n in events.items() if n}, {r: n for r, n in references.items() if n}


def progress_counts() -> dict[str, int]:
    """The running totals a progress line shows; statuses are of the rows the sink wrote,
    each the outcome of the whole chain of lookups."""
    rows = _samples(metrics.SINK_ROWS)
    return {
        "events": int(_samples(metrics.RECORDS_IN).get(("event",), 0)),
        "filtered": int(_samples(metrics.FILTERED).get(("event",), 0)),
        "enriched": int(rows.get(("enriched",), 0)),
        "late": int(rows.get(("late_enriched",), 0)),
        "miss": int(rows.get(("lookup_miss",), 0)),
        "dead_letters": sum(dead_letters_by_kind()[0].values()),
        "reference_dead_letters": _total(metrics.REFERENCE_DEAD_LETTERS),
        "pending": _total(metrics.PENDING),
        "rows_held": _total(metrics.ROWS_HELD),
    }


class Progress:
    """Logs a line every `interval` seconds and prints a summary at exit."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._last_events = 0
        self._last_time = self._started

    def start(self) -> None:
        if self._interval > 0:
            threading.Thread(target=self._run, name="progress", daemon=True).start()
        atexit.register(self.finish)

    def finish(self) -> None:
        """The summary is the run's report, not a log line: always on stdout."""
        self._stop.set()
        print(self.summary(), flush=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.report()

    def report(self) -> None:
        """Log one progress line; its numbers also travel as fields, for JSON logs."""
        now = time.monotonic()
        fields = progress_counts()
        elapsed = max(now - self._last_time, 1e-9)
        fields["events_per_second"] = round((fields["events"] - self._last_events) / elapsed)
        self._last_events, self._last_time = fields["events"], now
        log.info(PROGRESS_LINE.format_map(fields), extra=fields)

    def summary(self) -> str:
        elapsed = time.monotonic() - self._started
        records = _samples(metrics.RECORDS_IN)
        events = int(records.get(("event",), 0))
        lines = [
            "run summary (this process)",
            f"  events read          {events:>12,}  in {elapsed:.1f} s "
            f"({events / max(elapsed, 1e-9):,.0f} events/s)",
            f"  reference records    {int(records.get(('reference',), 0)):>12,}",
        ]
        filtered = int(_samples(metrics.FILTERED).get(("event",), 0))
        if filtered:
            lines.append(f"  events filtered out  {filtered:>12,}")
        outcomes = _samples(metrics.OUTCOMES)
        excluded = _samples(metrics.INNER_EXCLUDED)
        for lookup in dict.fromkeys(key[0] for key in outcomes):
            lines.append(f"  events out of lookup {lookup!r} by status:")
            for (_, status, reason), count in sorted(
                item for item in outcomes.items() if item[0][0] == lookup
            ):
                label = f"{status} ({reason})" if reason else status
                lines.append(f"    {label:<28}{int(count):>12,}")
            if excluded.get((lookup,)):
                lines.append(f"    {'excluded by inner join':<28}{int(excluded[(lookup,)]):>12,}")
        event_letters, reference_letters = dead_letters_by_kind()
        for kind, letters in (("event", event_letters), ("reference", reference_letters)):
            lines.append(f"  {kind} dead letters by reason:")
            for reason, count in sorted(letters.items()):
                lines.append(f"    {reason:<28}{count:>12,}")
        lines.append("  reference updates:")
        for (lookup, outcome), count in sorted(_samples(metrics.REFERENCE_UPDATES).items()):
            lines.append(f"    {f'{lookup} {outcome}':<28}{int(count):>12,}")
        lines.append(f"  rows upserted to sink{_total(metrics.SINK_ROWS):>11,}")
        return "\n".join(lines)
