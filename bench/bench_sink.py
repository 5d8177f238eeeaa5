"""Measures rows/s through the main sink into SQLite; prints Markdown tables.

    python bench/bench_sink.py                          # 1, 4 and 8 partitions, 5 runs each
    python bench/bench_sink.py --rows 100000 --runs 3
    python bench/bench_sink.py --lookup-index         # the same with the index on lookup_id
    python bench/bench_sink.py --smoke                  # tiny sizes: that it runs, for the tests

The same `UpsertSink` partitions the dataflow uses, in two shapes:

- dataflow: one Bytewax worker feeds pre-routed batches of enriched records
  to the sink, as the enrichment dataflow does; one worker writes its
  partitions one after another.
- threads: every partition writes from a thread of its own at the same time,
  as partitions spread over several workers or processes do.

The ceiling is a plain `executemany` of the same upsert, one transaction per
`--batch-size` rows, with no sink around it. Each run starts on a new file.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import run_main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_enrich import ListSource, machine  # noqa: E402
from dataflows.flow import table  # noqa: E402
from dataflows.settings import load_settings  # noqa: E402
from operators import routing  # noqa: E402
from operators.records import Event, FieldType, Joined, Status  # noqa: E402
from operators.sink_rows import SinkRow  # noqa: E402
from sinks.schema import create_tables  # noqa: E402
from sinks.sqlite import SqliteDialect, upsert_sql  # noqa: E402
from sinks.upsert import DEFAULT_DEAD_LETTERS, UpsertSink  # noqa: E402

TABLE = table(load_settings())
INPUT_BATCH = 1_000
"""Records per input batch, as the demo source delivers them."""
Batches = list[list[tuple[str, list[SinkRow]]]]
"""Input batches, each a list of (sink partition, records), as the route step emits them."""
SECTORS = ["Energy", "Materials", "Industrials", "Utilities", "Health Care", "Financials"]


def _value(kind: FieldType, i: int) -> Any:
    if kind == "str":
        return f"{SECTORS[i % 6]} {i % 10_000}"
    if kind == "bool":
        return i % 2 == 0
    return {"int": i % 10_000, "float": 100.0 + i % 97}[kind]


def records(count: int) -> list[SinkRow]:
    """Enriched quotes shaped like the demo's, with a value for each of `TABLE`'s columns.

    The row is built from the table the settings describe (by default the
    demo's two-lookup chain), so it keeps matching the sink's columns.
    """
    out = []
    for i in range(count):
        lookup_id = f"SEC{i % 10_000:07d}"
        fields = {"event_id": f"Q{i:08d}", "security_id": lookup_id, "ts": 1.7e9 + i}
        fields |= {name: _value(kind, i) for name, kind in TABLE.event_columns}
        event = Event(f"Q{i:08d}", lookup_id, 1.7e9 + i, fields, f"bench/event/0/{i}")
        row = (*(_value(kind, i) for _, kind in TABLE.reference_columns), 1)
        out.append(TABLE.rows.of(Joined(event, row, 1, Status.ENRICHED, None, 0.0)))
    return out


def routed(recs: list[SinkRow], partitions: int) -> Batches:
    """The records in input batches, each grouped by sink partition."""
    names = routing.names(partitions)
    return [
        routing.by_partition([recs[i : i + INPUT_BATCH]], names)[0]
        for i in range(0, len(recs), INPUT_BATCH)
    ]


def timed(run: Callable[[Path], None], rows: int, lookup_index: bool) -> float:
    """Seconds `run` takes to write into fresh tables; refuses a run that lost rows."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.sqlite"
        create_tables(
            SqliteDialect(db), replace(TABLE, lookup_index=lookup_index), DEFAULT_DEAD_LETTERS
        )
        started = time.perf_counter()
        run(db)
        seconds = time.perf_counter() - started
        with closing(sqlite3.connect(db)) as conn:
            stored = conn.execute(f'SELECT count(*) FROM "{TABLE.name}"').fetchone()[0]
    if stored != rows:
        raise RuntimeError(f"{stored} rows stored, {rows} expected")
    return seconds


def through_dataflow(batches: Batches, partitions: int, batch_size: int) -> Callable[[Path], None]:
    def run(db: Path) -> None:
        flow = Dataflow("bench_sink")
        groups = op.input("in", flow, ListSource(batches))
        op.output("sink", groups, UpsertSink(SqliteDialect(db), TABLE, partitions, batch_size))
        run_main(flow)

    return run


def through_threads(batches: Batches, partitions: int, batch_size: int) -> Callable[[Path], None]:
    per_part: dict[str, list[list[SinkRow]]] = {}
    for batch in batches:
        for name, group in batch:
            per_part.setdefault(name, []).append(group)

    def run(db: Path) -> None:
        sink = UpsertSink(SqliteDialect(db), TABLE, partitions, batch_size)

        def write(name: str) -> None:
            part = sink.build_part("sink", name, None)
            for group in per_part[name]:
                part.write_batch([group])
            part.close()

        threads = [threading.Thread(target=write, args=(name,)) for name in per_part]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return run


def plain_executemany(recs: list[SinkRow], batch_size: int) -> Callable[[Path], None]:
    def run(db: Path) -> None:
        sql = upsert_sql(TABLE)
        with closing(SqliteDialect(db).connect()) as conn:
            for start in range(0, len(recs), batch_size):
                conn.executemany(sql, [rec.binds for rec in recs[start : start + batch_size]])
                conn.commit()

    return run


def row(label: str, partitions: int | str, rows: int, seconds: list[float]) -> str:
    best, median = min(seconds), statistics.median(seconds)
    return (
        f"| {label} | {partitions} | {rows:,} | {best:.2f} | {rows / best:,.0f} | "
        f"{rows / median:,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=5_000, help="ENRICH_SINK_BATCH_SIZE")
    parser.add_argument(
        "--lookup-index",
        action="store_true",
        help="create the table with the index on lookup_id (ENRICH_SINK_LOOKUP_INDEX=true)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run: checks it runs")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.runs, args.batch_size = 2_000, 1, 500
    index = args.lookup_index
    recs = records(args.rows)
    print(f"Machine: {machine()}\n")
    print(
        f"{args.rows:,} rows, input batches of {INPUT_BATCH:,}, sink batch size "
        f"{args.batch_size:,}, {'with' if index else 'without'} the lookup_id index, "
        f"best and median of {args.runs} runs\n"
    )
    print("| shape | partitions | rows | best seconds | best rows/s | median rows/s |")
    print("|---|---|---|---|---|---|")
    for partitions in (1, 4, 8):
        batches = routed(recs, partitions)
        for label, make in (
            ("dataflow, 1 worker", through_dataflow),
            ("threads, 1 per partition", through_threads),
        ):
            run = make(batches, partitions, args.batch_size)
            print(
                row(
                    label,
                    partitions,
                    args.rows,
                    [timed(run, args.rows, index) for _ in range(args.runs)],
                ),
                flush=True,
            )
    ceiling = plain_executemany(recs, args.batch_size)
    print(
        row(
            "plain executemany (ceiling)",
            "-",
            args.rows,
            [timed(ceiling, args.rows, index) for _ in range(args.runs)],
        )
    )


if __name__ == "__main__":
    main()
