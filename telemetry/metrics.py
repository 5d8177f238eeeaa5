"""Process-wide Prometheus metrics.

One registry for the whole process so every worker thread adds to the same
series, and so Bytewax's API server (`BYTEWAX_DATAFLOW_API_ENABLED`) can serve
them without a second HTTP server. Hot paths add per batch, never per event.
docs/OPERATIONS.md explains each one.
"""

from prometheus_client import Counter, Gauge, Histogram

from telemetry.histogram import BatchHistogram

RECORDS_IN = Counter(
    "enrich_records_in_total", "Records read from a source, valid or not.", ["kind"]
)
FILTERED = Counter(
    "enrich_filtered_total",
    "Events the event filter left out before the join, and reference rows a lookup's "
    "filter turned into deletes, by kind.",
    ["kind"],
)
LOOKUPS = Counter(
    "enrich_lookups_total",
    "Events looked up in a lookup's reference state, by lookup and result.",
    ["lookup", "result"],
)
OUTCOMES = Counter(
    "enrich_events_out_total",
    "Events that left a lookup, by lookup, status and miss reason.",
    ["lookup", "status", "miss_reason"],
)
LATE_WAIT_SECONDS = BatchHistogram(
    "enrich_late_wait_seconds",
    "How long each late-enriched event waited for its reference row; the count is the "
    "number of late resolutions.",
    (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
INNER_EXCLUDED = Counter(
    "enrich_inner_join_excluded_total",
    "Events that found no row and were kept out of the main sink by an inner join, by lookup.",
    ["lookup"],
)
REFERENCE_UPDATES = Counter(
    "enrich_reference_updates_total",
    "Reference updates applied or ignored, by lookup and outcome.",
    ["lookup", "outcome"],
)
DEAD_LETTERS = Counter(
    "enrich_dead_letters_total", "Records sent to the dead-letter output, by reason.", ["reason"]
)
REFERENCE_DEAD_LETTERS = Counter(
    "enrich_reference_dead_letters_total",
    "Reference records among the dead letters (also in enrich_dead_letters_total), by reason.",
    ["reason"],
)
PENDING = Gauge(
    "enrich_pending_events",
    "Events buffered while waiting for their reference row, by lookup.",
    ["lookup"],
)
ROWS_HELD = Gauge("enrich_reference_rows", "Reference rows held in memory, by lookup.", ["lookup"])
WATERMARK = Gauge(
    "enrich_event_time_watermark_seconds",
    "The event clock's watermark (epoch seconds), by lookup; absent on the processing clock.",
    ["lookup"],
)
ROWS_EXPIRED = Counter(
    "enrich_reference_rows_expired_total",
    "Reference rows dropped for not being refreshed within the lookup's row TTL, by lookup.",
    ["lookup"],
)
VERSIONS_DROPPED = Counter(
    "enrich_reference_versions_dropped_total",
    "Versions an as-of lookup dropped from a key's history (beyond its bounds), by lookup.",
    ["lookup"],
)
SINK_ROWS = Counter("enrich_sink_rows_total", "Rows upserted into the main sink.", ["status"])
SINK_BATCHES = Counter("enrich_sink_batches_total", "Batches committed to the main sink.")
SINK_BATCH_SECONDS = Histogram(
    "enrich_sink_batch_seconds", "Time to write and commit one sink batch."
)
SINK_ERRORS = Counter(
    "enrich_sink_errors_total",
    "Failed attempts to reach or write the main sink's database, by kind: transient "
    "errors are retried, permanent ones stop the dataflow.",
    ["kind"],
)
SINK_RETRIES = Counter(
    "enrich_sink_retries_total", "Attempts repeated after a transient database error."
)
SINK_CIRCUIT_STATE = Gauge(
    "enrich_sink_circuit_state",
    "Circuit breaker of each main-sink partition: 0 closed, 1 open (waiting before a probe), "
    "2 half-open (probing).",
    ["partition"],
)
EVENT_TO_SINK_SECONDS = BatchHistogram(
    "enrich_event_to_sink_seconds",
    "From an event's own event time to the commit of its row in the main sink; "
    "only events that carry an event time.",
    (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 86400),
)
REPLAYED_INVALID = Counter(
    "enrich_replayed_invalid_total",
    "Invalid reference records met again while rebuilding rows; dead-lettered on first read.",
)
KAFKA_LAG = Gauge(
    "enrich_kafka_consumer_lag",
    "Records in a Kafka partition the dataflow reads that it has not read yet: the high "
    "watermark librdkafka last fetched minus the next offset to read, by topic and partition.",
    ["topic", "partition"],
)
KAFKA_COMMIT_ERRORS = Counter(
    "enrich_kafka_commit_errors_total",
    "Failed commits of completed snapshots' offsets to ENRICH_KAFKA_COMMIT_GROUP, by topic.",
    ["topic"],
)
KAFKA_UNANSWERED_SECONDS = Gauge(
    "enrich_kafka_unanswered_seconds",
    "Seconds since a Kafka broker last answered the dataflow's metadata check; 0 while they "
    "answer.",
)
KAFKA_OFFSET_RESETS = Counter(
    "enrich_kafka_offset_resets_total",
    "Partitions whose resume offset was no longer in the topic, by topic and the policy "
    "applied (fail stops the dataflow; earliest and latest restart there).",
    ["topic", "policy"],
)
