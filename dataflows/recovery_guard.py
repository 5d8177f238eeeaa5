"""Refuse a recovery store before Bytewax opens it: one others could write, or one laid out
for another dataflow.

Bytewax gives the dataflow module nothing of its run arguments, and opens the
store only after it imported the module. So while the module builds the flow,
this takes the recovery directory from `dataflows.run_args` and checks the store.
Anything else that imports the module (tests, `bytewax.testing`) runs
without recovery, and nothing is checked.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

from bytewax.dataflow import Dataflow, Operator
from bytewax.inputs import FixedPartitionedSource
from bytewax.outputs import FixedPartitionedSink

from dataflows.run_args import recovery_directory
from dataflows.settings import Settings
from operators import routing
from operators.lookup_steps import JOIN_PREFIX, join_step, step_of
from recovery_store import trust
from recovery_store.layout import (
    Change,
    ClockChange,
    ShardCountChange,
    StepLayout,
    changes,
    clock_changes,
    shard_count_changes,
    waiting_events,
)
from recovery_store.store import Store, StoreError, read_store
from sources.kafka import EventSource, ReferenceSource

EXIT_REFUSED = 2

SETTINGS_OF_STEPS = {
    "dead_letter_out": "ENRICH_DEAD_LETTER_PATH",
    "sink": "ENRICH_SINK_PARTITIONS",
    JOIN_PREFIX: "ENRICH_SHARDS",
    "input": "ENRICH_DEMO_PARTITIONS, ENRICH_LOOKUPS",
    "reference_file_": "the file of a lookup in ENRICH_LOOKUPS",
}
"""Which settings decide each step's state keys, by the start of the step's name."""


def _steps(operators: list[Operator]) -> Iterator[Operator]:
    for step in operators:
        yield step
        yield from _steps(getattr(step, "substeps", []))


def _settings_of(step_id: str) -> str:
    name = step_id.split(".", 1)[-1]
    return next(
        (settings for start, settings in SETTINGS_OF_STEPS.items() if name.startswith(start)),
        "the dataflow's steps",
    )


def _keys(step: Operator, shard_names: list[str]) -> frozenset[str] | None:
    """The state keys `step` can take; None where they are not compared.

    A Kafka topic's partitions only the cluster knows; a step without state
    drops whatever the store holds for it, as Bytewax does.
    """
    source = getattr(step, "source", None)
    if isinstance(source, EventSource | ReferenceSource):
        return None
    if isinstance(source, FixedPartitionedSource):
        return frozenset(source.list_parts())
    sink = getattr(step, "sink", None)
    if isinstance(sink, FixedPartitionedSink):
        return frozenset(sink.list_parts())
    if hasattr(step, "builder"):
        lookup_step = step_of(step.step_id)
        if lookup_step is not None and lookup_step.parked:
            # Keyed by shard and second of arrival: segments of any shard count time out
            # on their own, and the join (`enrich_`) is compared by shard.
            return None
        # Every other stateful step of this dataflow is keyed by enrichment shard.
        return frozenset(shard_names)
    return None  # No state (a Kafka producer): Bytewax ignores what the store holds for it.


def flow_layout(flow: Dataflow, shard_names: list[str]) -> dict[str, StepLayout]:
    """Every step of `flow`, with the keys it can take where they are known without I/O."""
    return {
        step.step_id: StepLayout(_keys(step, shard_names), _settings_of(step.step_id))
        for step in _steps(flow.substeps)
    }


def _that_lose_events(found: list[Change], store: Store) -> list[Change]:
    """Bytewax drops the state of a step that is gone: that matters only where events wait."""
    kept: list[Change] = []
    for change in found:
        if change.now is not None:
            kept.append(change)
        else:
            waiting = waiting_events(store, change.step_id)
            if waiting != 0:
                kept.append(replace(change, waiting=waiting))
    return kept


def problems(
    directory: Path,
    flow: Dataflow,
    shard_names: list[str],
    trusted_group: int | None = None,
    clocks: Mapping[str, str] | None = None,
) -> str | None:
    """Why the run must not open `directory`, as a message for a person; None when it may."""
    try:
        trust.check(directory, trusted_group)
    except trust.UntrustedStore as exc:
        return str(exc)
    if not directory.is_dir():
        return None  # Bytewax says so itself.
    try:
        # The joins' bytes only: they record the shard count; segments may be large.
        store = read_store(
            directory, with_data=False, trusted_group=trusted_group, data_of=f".{JOIN_PREFIX}"
        )
    except StoreError:
        return None  # Bytewax says what is wrong with the partitions itself.
    keys = changes(store, flow_layout(flow, shard_names))
    if any(change.now is None for change in keys):
        keys = _that_lose_events(keys, read_store(directory, trusted_group=trusted_group))
    # Shard names only grow with the count, so more shards fit the stored keys; the count
    # the joins recorded tells.
    found: list[Change | ShardCountChange | ClockChange] = [
        *keys,
        *shard_count_changes(store, len(shard_names)),
        *clock_changes(store, clocks or {}),
    ]
    if not found:
        return None
    lines = "\n".join(f"  {change}" for change in found)
    return (
        f"the recovery store {directory} was written by a dataflow laid out differently; "
        f"a resume would stop in Bytewax's panic or lose the state named here:\n{lines}\n"
        "Either run again with the settings the store was written with, or resume nothing: "
        "start with a new, empty recovery directory (mkdir -m 700 DIR && python -m "
        "bytewax.recovery DIR COUNT) and "
        "keep the old one to go back to. A new directory forgets where the sources were and "
        "the events waiting for their reference rows: the events topic is read again from "
        "ENRICH_KAFKA_EVENTS_START (earliest: everything again, which the sink's upsert makes "
        "harmless, and dead letters written again; latest: what arrived since the last "
        "snapshot is skipped), and the demo starts over."
    )


def refuse_unsafe_store(flow: Dataflow, settings: Settings) -> None:
    """Exit 2 with the reason when this run's recovery store must not be opened."""
    directory = recovery_directory()
    if directory is None:
        return
    clocks = {
        f"{flow.flow_id}.{join_step(lookup.name)}": settings.clock_of(lookup)
        for lookup in settings.lookups
    }
    message = problems(
        directory, flow, routing.names(settings.shards), settings.recovery_trusted_group, clocks
    )
    if message is not None:
        print(f"enrich: {message}", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED)
