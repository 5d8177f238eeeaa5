"""What each event costs from leaving its last lookup to its row in SQLite, in µs per row.

    python bench/bench_sink_row.py             # 100,000 demo-shaped rows, best of 5
    python bench/bench_sink_row.py --smoke     # tiny sizes, one run: checks it runs

Measured step by step, on records shaped like the demo's (the settings'
chain: two lookups, or only the first as a one-lookup chain): the step that
turns the last lookup's outputs into sink rows grouped by partition (and its
parts), and the SQLite write with and without the index on `lookup_id`.
Nothing here touches Kafka or Bytewax; see docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_enrich import machine
from bench.bench_sink import _value
from dataflows.flow import _stages, table
from dataflows.settings import load_settings
from operators import routing
from operators.chain import Stage, finish
from operators.records import Event, Joined, Outcome, Status
from operators.sink_rows import stages_json
from operators.steps import ToSink
from sinks.schema import create_tables
from sinks.sqlite import SqliteDialect, upsert_sql
from sinks.table import EnrichedTable
from sinks.upsert import DEFAULT_DEAD_LETTERS, UpsertSink

SETTINGS = load_settings()
BATCH = 1_000
"""Records per batch the last lookup emits, as the demo source delivers them."""
PARTITIONS = 4
SINK_BATCH = 5_000


class Chain:
    """One chain's shape: its last stage, its table, and its last lookup's outputs."""

    def __init__(self, lookups: int, count: int) -> None:
        stages = _stages(SETTINGS)[:lookups]
        full = table(SETTINGS)
        width = sum(len(stage.columns) for stage in stages)
        self.table = EnrichedTable(
            full.name, full.event_columns, full.reference_columns[:width], full.unstored_fields
        )
        self.last: Stage = stages[-1]
        self.earlier = tuple(column for stage in stages[:-1] for column in stage.columns)
        self.batches = [
            [("00", [self.joined(i) for i in range(start, min(start + BATCH, count))])]
            for start in range(0, count, BATCH)
        ]

    def joined(self, i: int) -> Joined:
        security = f"SEC{i % 10_000:07d}"
        fields: dict[str, Any] = {"event_id": f"Q{i:08d}", "security_id": security}
        fields |= {"ts": 1.7e9 + i, "price": 100.0 + i % 97, "size": i % 10_000}
        kinds = dict(self.table.reference_columns)
        before: tuple[Outcome, ...] = ()
        lookup_id = security
        if self.earlier:
            fields |= {name: _value(kinds[name], i) for name in self.earlier}
            before = (Outcome("security", Status.ENRICHED, None, 0.0, 3),)
            lookup_id = str(fields[self.earlier[-1]])
        event = Event(f"Q{i:08d}", lookup_id, 1.7e9 + i, fields, f"bench/event/0/{i}", before, i)
        row = (*(_value(kinds[name], i) for name in self.last.columns), 7)
        return Joined(event, row, 7, Status.ENRICHED, None, 0.0)

    def records(self) -> list[Joined]:
        return [rec for batch in self.batches for _, out in batch for rec in out]

    def to_sink(self) -> ToSink:
        return ToSink(
            self.last,
            self.earlier,
            SETTINGS.lookup_field,
            routing.names(PARTITIONS),
            self.table.rows,
        )


def best_micros(run: Callable[[], object], rows: int, runs: int) -> float:
    """The best of `runs` timings of `run`, in µs per row."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best * 1e6 / rows


def _stage(outcome: Outcome) -> dict[str, Any]:
    return {
        "lookup": outcome.lookup,
        "status": outcome.status.value,
        "miss_reason": None if outcome.miss_reason is None else outcome.miss_reason.value,
        "waited_ms": outcome.waited_ms,
        "version": outcome.version,
    }


def dumped(stages: tuple[Outcome, ...]) -> str:
    """The stages column as the sink built it before: a dict per outcome, `json.dumps` per row."""
    return json.dumps([_stage(outcome) for outcome in stages], separators=(",", ":"))


def route_steps(chain: Chain, runs: int) -> list[tuple[str, float]]:
    recs = chain.records()
    count = len(recs)
    last, earlier, field, rows = chain.last, chain.earlier, SETTINGS.lookup_field, chain.table.rows
    finished = [finish(rec, last, earlier, field, rows) for rec in recs]
    stages: list[tuple[Outcome, ...]] = [
        finish(rec, last, earlier, field).event.stages for rec in recs
    ]
    if [stages_json(s) for s in stages] != [dumped(s) for s in stages]:
        raise RuntimeError("the templated stages column differs from json.dumps")
    names = routing.names(PARTITIONS)
    to_sink = chain.to_sink()
    return [
        (
            "finish into the sink row (its binds built)",
            best_micros(lambda: [finish(r, last, earlier, field, rows) for r in recs], count, runs),
        ),
        (
            "of which the stages column, json.dumps per row",
            best_micros(lambda: [dumped(s) for s in stages], count, runs),
        ),
        (
            "of which the stages column, templated",
            best_micros(lambda: [stages_json(s) for s in stages], count, runs),
        ),
        (
            "route to sink partitions",
            best_micros(lambda: routing.by_partition([finished], names), count, runs),
        ),
        (
            "the whole step (ToSink)",
            best_micros(lambda: [to_sink(batch) for batch in chain.batches], count, runs),
        ),
    ]


def plain_insert(table: EnrichedTable) -> str:
    """The upsert without its ON CONFLICT clause: what the upsert adds for new rows."""
    return upsert_sql(table).split(" ON CONFLICT")[0]


def sqlite_micros(
    chain: Chain, index: bool, runs: int, commit: int = SINK_BATCH, sql: str = ""
) -> float:
    """Write every row, one transaction per `commit` rows, into fresh tables; µs per row.

    `sql` defaults to the sink's upsert; "sink" writes through the sink
    partition itself (its metrics and checks included).
    """
    last, earlier, field = chain.last, chain.earlier, SETTINGS.lookup_field
    rows = [finish(r, last, earlier, field, chain.table.rows) for r in chain.records()]
    binds = [row.binds for row in rows]
    best = float("inf")
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            dialect = SqliteDialect(Path(tmp) / "bench.sqlite")
            create_tables(dialect, chain.table, DEFAULT_DEAD_LETTERS)
            with closing(dialect.connect()) as conn:
                if not index:
                    for column in chain.table.indexed():
                        conn.execute(f'DROP INDEX IF EXISTS "{chain.table.name}_{column}"')
                if sql == "sink":
                    sink = UpsertSink(dialect, chain.table, 1, commit)
                    part = sink.build_part("sink", "0", None)
                    started = time.perf_counter()
                    for start in range(0, len(rows), BATCH):
                        part.write_batch([rows[start : start + BATCH]])
                    best = min(best, time.perf_counter() - started)
                    part.close()
                else:
                    statement = sql or upsert_sql(chain.table)
                    started = time.perf_counter()
                    for start in range(0, len(binds), commit):
                        conn.execute("BEGIN IMMEDIATE")
                        conn.executemany(statement, binds[start : start + commit])
                        conn.commit()
                    best = min(best, time.perf_counter() - started)
                stored = conn.execute(f'SELECT count(*) FROM "{chain.table.name}"').fetchone()[0]
        if stored != len(rows):
            raise RuntimeError(f"{stored} rows stored, {len(rows)} expected")
    return best * 1e6 / len(rows)


def sqlite_steps(chain: Chain, runs: int, sweep: bool) -> list[tuple[str, float]]:
    out = []
    for index in (True, False):
        what = "with" if index else "without"
        out.append(
            (f"SQLite upsert, {what} the lookup_id index", sqlite_micros(chain, index, runs))
        )
    if sweep:
        out.append(
            (
                "SQLite plain INSERT, with the index",
                sqlite_micros(chain, True, runs, SINK_BATCH, plain_insert(chain.table)),
            )
        )
        for commit in (1_000, 20_000):
            out.append(
                (
                    f"SQLite upsert, with the index, commits of {commit:,}",
                    sqlite_micros(chain, True, runs, commit),
                )
            )
        out.append(
            (
                "the sink partition's write_batch, with the index",
                sqlite_micros(chain, True, runs, SINK_BATCH, "sink"),
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run: checks it runs")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.runs = 2_000, 1
    print(f"Machine: {machine()}\n")
    print(
        f"{args.rows:,} rows in batches of {BATCH:,}, {PARTITIONS} sink partitions, "
        f"SQLite commits of {SINK_BATCH:,} rows, best of {args.runs} runs, µs per row\n"
    )
    print("| chain | step | µs per row |")
    print("|---|---|---|")
    for lookups in (1, 2):
        chain = Chain(lookups, args.rows)
        label = f"{lookups} lookup{'s' if lookups > 1 else ''}"
        for step, micros in route_steps(chain, args.runs):
            print(f"| {label} | {step} | {micros:.2f} |", flush=True)
        for step, micros in sqlite_steps(chain, args.runs, sweep=lookups == 2):
            print(f"| {label} | {step} | {micros:.2f} |", flush=True)


if __name__ == "__main__":
    main()
