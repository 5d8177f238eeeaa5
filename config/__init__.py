"""The ground floor: settings every program of the project shares.

Connections (Kafka, Oracle), logging, the lookup chain, the `ENRICH_` prefix and
the known-variable check, and how a bad setting stops a program (exit 2).
Nothing here imports the floors above (sources, sinks, telemetry, reference,
dataflows, the command); `tests/test_layers.py` keeps it so.
"""
