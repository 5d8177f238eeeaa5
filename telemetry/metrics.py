"""Process-wide Prometheus metrics.

One registry for the whole process so every worker thread adds to the same
series, and so Bytewax's API server (`BYTEWAX_DATAFLOW_API_ENABLED`) can serve
them without a second HTTP server. Hot paths add per batch, never per event.
"""

from prometheus_client import Counter, Gauge, Histogram

RECORDS_IN = Counter(
    "enrich_records_in_total", "Records read from a source, valid or not.", ["kind"]
)
LOOKUPS = Counter(
    "enrich_lookups_total", "Events looked up in the reference state, by result.", ["result"]
)
OUTCOMES = Counter(
    "enrich_events_out_total",
    "Events that left the enrichment step, by status and miss reason.",
    ["status", "miss_reason"],
)
INNER_EXCLUDED = Counter(
    "enrich_inner_join_excluded_total",
    "Events that found no row and were kept out of the main sink by an inner join.",
)
REFERENCE_UPDATES = Counter(
    "enrich_reference_updates_total",
    "Reference updates applied or ignored, by outcome.",
    ["outcome"],
)
DEAD_LETTERS = Counter(
    "enrich_dead_letters_total", "Records sent to the dead-letter output, by reason.", ["reason"]
)
PENDING = Gauge("enrich_pending_events", "Events buffered while waiting for their reference row.")
ROWS_HELD = Gauge("enrich_reference_rows", "Reference rows held in memory.")
SINK_ROWS = Counter("enrich_sink_rows_total", "Rows upserted into the main sink.", ["status"])
SINK_BATCHES = Counter("enrich_sink_batches_total", "Batches committed to the main sink.")
SINK_BATCH_SECONDS = Histogram(
    "enrich_sink_batch_seconds", "Time to write and commit one sink batch."
)
REPLAYED_INVALID = Counter(
    "enrich_replayed_invalid_total",
    "Invalid reference records met again while rebuilding rows; dead-lettered on first read.",
)
