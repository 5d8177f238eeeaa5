"""Turns what the pure steps counted into Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterable

from operators.decode import DecodedBatch
from operators.enrichment import Tally
from operators.records import DeadLetter
from telemetry import metrics


def record_tally(tally: Tally) -> None:
    """Add one enrichment call's counts; called once per batch, not per event."""
    if tally.hits:
        metrics.LOOKUPS.labels("hit").inc(tally.hits)
        metrics.OUTCOMES.labels("enriched", "").inc(tally.hits)
    if tally.misses:
        metrics.LOOKUPS.labels("miss").inc(tally.misses)
    if tally.late:
        metrics.OUTCOMES.labels("late_enriched", "").inc(tally.late)
    for reason, count in tally.missed_out.items():
        metrics.OUTCOMES.labels("lookup_miss", reason.value).inc(count)
    if tally.inner_excluded:
        metrics.INNER_EXCLUDED.inc(tally.inner_excluded)
    for outcome in ("applied", "stale", "deleted", "absent_deletes"):
        count = getattr(tally, outcome)
        if count:
            metrics.REFERENCE_UPDATES.labels(outcome).inc(count)
    if tally.pending_delta:
        metrics.PENDING.inc(tally.pending_delta)
    if tally.rows_delta:
        metrics.ROWS_HELD.inc(tally.rows_delta)


def record_dead_letters(letters: Iterable[DeadLetter]) -> None:
    counts: dict[str, int] = {}
    for letter in letters:
        counts[letter.reason] = counts.get(letter.reason, 0) + 1
    for reason, count in counts.items():
        metrics.DEAD_LETTERS.labels(reason).inc(count)


def record_decoded(decoded: DecodedBatch, batch_size: int) -> None:
    metrics.RECORDS_IN.labels("event").inc(decoded.events)
    metrics.RECORDS_IN.labels("reference").inc(batch_size - decoded.events)
    if decoded.replayed_invalid:
        metrics.REPLAYED_INVALID.inc(decoded.replayed_invalid)
