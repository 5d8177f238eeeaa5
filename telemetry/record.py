"""Turns what the pure steps counted into Prometheus metrics."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable

from operators.decode import DecodedBatch
from operators.enrichment import Tally
from operators.filters import FILTER_FIELD_MISSING
from operators.records import DeadLetter
from telemetry import metrics

log = logging.getLogger("enrich.filters")

_warned: set[str] = set()
_warned_lock = threading.Lock()


def record_tally(lookup: str, tally: Tally) -> None:
    """Add one enrichment call's counts for `lookup`; called once per batch, not per event."""
    if tally.hits:
        metrics.LOOKUPS.labels(lookup, "hit").inc(tally.hits)
        metrics.OUTCOMES.labels(lookup, "enriched", "").inc(tally.hits)
    if tally.misses:
        metrics.LOOKUPS.labels(lookup, "miss").inc(tally.misses)
    if tally.late:
        metrics.OUTCOMES.labels(lookup, "late_enriched", "").inc(tally.late)
        metrics.LATE_WAIT_SECONDS.observe_many(ms / 1000.0 for ms in tally.late_waits_ms)
    for reason, count in tally.missed_out.items():
        metrics.OUTCOMES.labels(lookup, "lookup_miss", reason.value).inc(count)
    if tally.inner_excluded:
        metrics.INNER_EXCLUDED.labels(lookup).inc(tally.inner_excluded)
    for outcome in ("applied", "stale", "deleted", "absent_deletes"):
        count = getattr(tally, outcome)
        if count:
            metrics.REFERENCE_UPDATES.labels(lookup, outcome).inc(count)
    if tally.pending_delta:
        metrics.PENDING.labels(lookup).inc(tally.pending_delta)
    if tally.rows_delta:
        metrics.ROWS_HELD.labels(lookup).inc(tally.rows_delta)
    if tally.watermark is not None:
        metrics.WATERMARK.labels(lookup).set(tally.watermark)
    if tally.ttl_dropped:
        metrics.ROWS_EXPIRED.labels(lookup).inc(tally.ttl_dropped)
    if tally.versions_dropped:
        metrics.VERSIONS_DROPPED.labels(lookup).inc(tally.versions_dropped)


def record_dead_letters(letters: Iterable[DeadLetter]) -> None:
    counts: dict[str, int] = {}
    for letter in letters:
        counts[letter.reason] = counts.get(letter.reason, 0) + 1
        if letter.reason == FILTER_FIELD_MISSING:
            _warn_once(letter)
    for reason, count in counts.items():
        metrics.DEAD_LETTERS.labels(reason).inc(count)


def _warn_once(letter: DeadLetter) -> None:
    """One warning per filter and field, not per record: a typo would flood the log."""
    with _warned_lock:
        if letter.detail in _warned:
            return
        _warned.add(letter.detail)
    log.warning(
        "%s (first at %s); such records go to the dead letters with reason %s, counted in "
        "enrich_dead_letters_total; fix the producer or the filter",
        letter.detail,
        letter.origin,
        FILTER_FIELD_MISSING,
    )


def counted(letter: DeadLetter) -> DeadLetter:
    """The dead letter, counted on its way to the dead-letter output."""
    record_dead_letters((letter,))
    return letter


def record_decoded(decoded: DecodedBatch, batch_size: int) -> None:
    """`batch_size` counts the whole source batch; caught-up markers are not records."""
    metrics.RECORDS_IN.labels("event").inc(decoded.events)
    metrics.RECORDS_IN.labels("reference").inc(batch_size - decoded.events - len(decoded.caught_up))
    if decoded.replayed_invalid:
        metrics.REPLAYED_INVALID.inc(decoded.replayed_invalid)
    if decoded.filtered_events:
        metrics.FILTERED.labels("event").inc(decoded.filtered_events)
    if decoded.filtered_references:
        metrics.FILTERED.labels("reference").inc(decoded.filtered_references)
    if decoded.bad_references:
        for reason, count in Counter(letter.reason for letter in decoded.bad_references).items():
            metrics.REFERENCE_DEAD_LETTERS.labels(reason).inc(count)
