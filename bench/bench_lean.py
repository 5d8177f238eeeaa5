"""Issue "Lean path": the product against simpler ways of doing the same join, in one run.

    python bench/bench_lean.py            # ~4 min here: 150,000 events, 3 rounds
    python bench/bench_lean.py --smoke    # tiny sizes: that it runs, for the tests
    python bench/bench_lean.py --quix-python /tmp/quix-venv/bin/python   # adds Quix Streams

Every contender reads the same librdkafka mock cluster, filled once (events
and reference rows, 4 partitions each, bench_kafka's data), in a fresh
interpreter, and contenders take turns round by round (A B C, A B C, ...) so a
slow spell of this shared host hits them all; the table shows medians. Rates
are timed from the first event read to the last one leaving (start-up and
connecting not counted); "wall" is the whole process, start-up included.

- product: the real dataflow into SQLite, one worker, recovery on (1 s
  epochs), to the end of the topics (bench_kafka's "database" cut);
- product, null sink: the same with a sink that only counts rows;
- plain loop: `Consumer.consume(10000)`, orjson, a dict, `executemany` into
  SQLite (WAL, one transaction per batch, an index on `lookup_id`), the
  reference rows read first;
- naive Bytewax: Bytewax's own `KafkaSource`, JSON, `key_on`, `stateful_map`,
  no database and no waiting for rows (events before their row are misses);
- Quix Streams `join_asof` (bench/lean_quix.py), only with `--quix-python`:
  it cannot share this project's environment (it needs confluent-kafka < 2.13);
- the demo with one worker, two worker threads (`-w 2`) and two processes;
- p99 event-to-row latency at a fixed offered rate (bench_kafka's latency run).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import Consumer, KafkaError, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import bench_kafka  # noqa: E402
from bench.bench_enrich import machine, run_demo, run_with_recovery  # noqa: E402
from bench.bench_kafka import Meter, MeteredEvents, fill, mock_cluster  # noqa: E402

try:
    from orjson import loads

    PARSER = "orjson"
except ImportError:  # without the [peers] extra
    from json import loads

    PARSER = "json"

PARTITIONS = 4
FETCH = {"fetch.wait.max.ms": "50"}
"""The product's consumers' default (README, ENRICH_KAFKA_CONFIG); every contender uses it."""


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-lean",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "log_level": 3,
            **FETCH,
        }
    )


def _read_to_end(consumer: Consumer, topic: str, handle: Callable[[list[Any]], None]) -> None:
    """Feeds `handle` every batch of `topic` from its start until each partition's end."""
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    ended = 0
    while ended < PARTITIONS:
        batch = consumer.consume(10_000, 0.1)
        good = []
        for msg in batch:
            error = msg.error()
            if error is None:
                good.append(msg)
            elif error.code() == KafkaError._PARTITION_EOF:
                ended += 1
            else:
                raise RuntimeError(f"plain loop: {error}")
        if good:
            handle(good)


def plain_loop(bootstrap: str, events: int) -> dict[str, float]:
    """The ceiling a Python program reaches: no framework, no state handling, no guarantees."""
    consumer = _consumer(bootstrap)
    table: dict[str, tuple[Any, ...]] = {}

    def load(batch: list[Any]) -> None:
        for msg in batch:
            row = loads(msg.value())
            table[msg.key().decode()] = (row["cusip"], row["name"], row["sector"])

    _read_to_end(consumer, "reference", load)
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp, "plain.sqlite"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE enriched (event_id TEXT PRIMARY KEY, lookup_id TEXT, event_time REAL,"
            " price REAL, size INTEGER, cusip TEXT, name TEXT, sector TEXT)"
        )
        db.execute("CREATE INDEX enriched_lookup ON enriched (lookup_id)")
        missing = (None, None, None)
        sql = "INSERT OR REPLACE INTO enriched VALUES (?, ?, ?, ?, ?, ?, ?, ?)"

        def write(batch: list[Any]) -> None:
            Meter.start()
            rows = []
            for msg in batch:
                event = loads(msg.value())
                lookup_id = event["security_id"]
                rows.append(
                    (
                        event["event_id"],
                        lookup_id,
                        event["ts"],
                        event["price"],
                        event["size"],
                        *table.get(lookup_id, missing),
                    )
                )
            db.execute("BEGIN")
            db.executemany(sql, rows)
            db.execute("COMMIT")
            Meter.add(len(rows))

        _read_to_end(consumer, "events", write)
        written = db.execute("SELECT count(*) FROM enriched").fetchone()[0]
        db.close()
    consumer.close()
    if written != events:
        raise RuntimeError(f"plain loop: {written} of {events} rows written")
    return {"rate": Meter.rate()}


class _NaiveCount(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        joined = [row for _, (kind, row) in items if kind == "events"]
        NaiveCount.misses += sum(row is None for row in joined)
        Meter.add(len(joined))


class NaiveCount(DynamicSink[Any]):
    """Counts the naive flow's events out, and those that found no row (yet)."""

    misses = 0

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _NaiveCount:
        return _NaiveCount()


def _naive_join(row: Any, item: tuple[str, bytes, Any]) -> tuple[Any, tuple[str, Any]]:
    kind, _, value = item
    if kind == "reference":
        return value, (kind, None)
    return row, (kind, row)


def naive_flow(bootstrap: str) -> Dataflow:
    """What a first Bytewax version of the join looks like: one key per lookup id."""
    flow = Dataflow("naive")
    streams = []
    for topic in ("reference", "events"):
        source: Any = KafkaSource([bootstrap], [topic], tail=False, add_config=FETCH)
        if topic == "events":
            source = MeteredEvents(source)
        messages = op.input(topic, flow, source)
        streams.append(op.map(f"json_{topic}", messages, partial(_parse, topic)))
    keyed = op.key_on("key", op.merge("merge", *streams), lambda item: item[1].decode())
    op.output("out", op.stateful_map("join", keyed, _naive_join), NaiveCount())
    return flow


def _parse(topic: str, message: Any) -> tuple[str, bytes, Any]:
    return topic, message.key, loads(message.value)


def naive_bytewax(bootstrap: str, events: int) -> dict[str, float]:
    run_with_recovery(naive_flow(bootstrap))
    if Meter.events != events:
        raise RuntimeError(f"naive Bytewax: {Meter.events} of {events} events out")
    return {"rate": Meter.rate(), "misses": NaiveCount.misses / events}


CHILDREN: dict[str, Callable[[str, int], dict[str, float]]] = {
    "plain": plain_loop,
    "naive": naive_bytewax,
}


def _timed(what: str, command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Runs a contender's process; its last line of output (JSON) plus its wall seconds."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{what}: {result.stderr[-3000:]}")
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "wall": wall}


def in_child(name: str, bootstrap: str, events: int) -> dict[str, float]:
    """One contender of this file in a fresh interpreter."""
    command = [sys.executable, __file__, "_child", name, bootstrap, str(events)]
    return _timed(name, command, {**os.environ, "PYTHONPATH": str(ROOT)})


def product(stage: str) -> Callable[[str, int], dict[str, float]]:
    """The real dataflow, cut where bench_kafka cuts it, in a fresh interpreter."""

    def run(bootstrap: str, events: int) -> dict[str, float]:
        started = time.perf_counter()
        rate = bench_kafka.in_subprocess("stage", bootstrap, stage, str(events))
        return {"rate": rate, "wall": time.perf_counter() - started}

    return run


def quix(python: str) -> Callable[[str, int], dict[str, float]]:
    """Quix Streams' `join_asof` (bench/lean_quix.py), run by an interpreter that has it.

    Without this project on its path: that interpreter has none of its packages.
    """

    def run(bootstrap: str, events: int) -> dict[str, float]:
        command = [python, str(ROOT / "bench" / "lean_quix.py"), bootstrap, str(events)]
        return _timed("Quix Streams", command, dict(os.environ))

    return run


PRODUCT = "the product (Kafka → enrich → SQLite, 1 worker, recovery on)"
NULL_SINK = "the product, null sink (counts rows, no database)"
PLAIN = f"plain loop (consume(10000) → {PARSER} → dict → executemany, WAL, lookup_id index)"
NAIVE = f"naive Bytewax (KafkaSource → {PARSER} → key_on → stateful_map, no database)"
QUIX = "Quix Streams join_asof (no database)"


def kafka_rounds(
    bootstrap: str, events: int, rounds: int, quix_python: str | None
) -> dict[str, list[dict[str, float]]]:
    contenders: dict[str, Callable[[str, int], dict[str, float]]] = {
        PRODUCT: product("database"),
        NULL_SINK: product("join"),
        PLAIN: lambda b, n: in_child("plain", b, n),
        NAIVE: lambda b, n: in_child("naive", b, n),
    }
    if quix_python:
        contenders[QUIX] = quix(quix_python)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    for i in range(rounds):
        for name, run in contenders.items():
            results[name].append(run(bootstrap, events))
            print(f"  round {i + 1}: {name}: {results[name][-1]}", file=sys.stderr)
    return results


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def kafka_table(results: dict[str, list[dict[str, float]]], events: int) -> list[str]:
    product_rate = _median(results[PRODUCT], "rate")
    plain_rate = _median(results[PLAIN], "rate")
    lines = [
        "| contender | events/s (first read → last out) | rounds' range | events/s (process wall) "
        "| ratio to product | ratio to plain loop | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        rate = _median(runs, "rate")
        low, high = (f(run["rate"] for run in runs) / 1000 for f in (min, max))
        note = ""
        if "misses" in runs[0]:
            note = f"{_median(runs, 'misses'):.1%} misses (no waiting for rows)"
        lines.append(
            f"| {name} | {rate:,.0f} | {low:,.1f} to {high:,.1f} K "
            f"| {events / _median(runs, 'wall'):,.0f} "
            f"| {rate / product_rate:.2f} | {rate / plain_rate:.2f} | {note} |"
        )
    return lines


DEMO = {"-w 1": (1, 1), "-w 2 (threads, one process)": (2, 1), "2 processes (-i/-a)": (1, 2)}


def demo_rounds(events: int, references: int, rounds: int) -> dict[str, list[float]]:
    """Wall seconds of each way of running the demo, taking turns round by round."""
    seconds: dict[str, list[float]] = {name: [] for name in DEMO}
    for _ in range(rounds):
        for name, (workers, processes) in DEMO.items():
            seconds[name].append(run_demo(events, references, workers, processes))
    return seconds


def demo_table(seconds: dict[str, list[float]], events: int) -> list[str]:
    one = statistics.median(seconds["-w 1"])
    lines = ["| the demo | events/s (wall) | ratio to -w 1 |", "|---|---|---|"]
    for name, runs in seconds.items():
        wall = statistics.median(runs)
        lines.append(f"| {name} | {events / wall:,.0f} | {one / wall:.2f} |")
    return lines


def goals_table(
    results: dict[str, list[dict[str, float]]],
    demo: dict[str, list[float]],
    latency_row: str,
    rate: int,
) -> list[str]:
    """Issue 17's goals against this run's medians."""
    product_rate, null_rate, plain_rate = (
        _median(results[name], "rate") for name in (PRODUCT, NULL_SINK, PLAIN)
    )
    threads = statistics.median(demo["-w 1"]) / statistics.median(
        demo["-w 2 (threads, one process)"]
    )
    p99 = float(latency_row.split("|")[4])
    goals = [
        ("product ≥ 0.8 of the plain loop", f"{product_rate / plain_rate:.2f}",
         product_rate >= 0.8 * plain_rate),
        ("null sink ≥ 300 K events/s", f"{null_rate / 1000:,.1f} K", null_rate >= 300_000),
        ("demo -w 2 ≥ 1.5 times -w 1", f"{threads:.2f}", threads >= 1.5),
        (f"p99 ≤ 100 ms at {rate:,}/s", f"{p99:,.0f} ms", p99 <= 100),
    ]  # fmt: skip
    lines = ["| goal | measured | met |", "|---|---|---|"]
    lines += [f"| {goal} | {value} | {'yes' if met else 'no'} |" for goal, value, met in goals]
    return lines


def revision() -> str:
    result = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "unknown"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        name, bootstrap, events = sys.argv[2:5]
        print(json.dumps(CHILDREN[name](bootstrap, int(events))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=150_000, help="events in the topic")
    parser.add_argument("--rows", type=int, default=10_000, help="reference rows")
    parser.add_argument("--rounds", type=int, default=3, help="turns of every contender")
    parser.add_argument("--demo-events", type=int, default=150_000)
    parser.add_argument("--rate", type=int, default=50_000, help="offered events/s, latency")
    parser.add_argument("--seconds", type=int, default=5, help="seconds offered, latency")
    parser.add_argument("--quix-python", help="an interpreter with quixstreams installed")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks it runs, measures nothing"
    )
    args = parser.parse_args()
    if args.smoke:
        args.events, args.rows, args.rounds, args.demo_events = 2_000, 100, 1, 2_000
        args.rate, args.seconds = 500, 1
    if args.quix_python and not Path(args.quix_python).exists():
        parser.error(f"--quix-python: {args.quix_python} does not exist")
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    print(f"Machine: {machine()}; commit {revision()}, {today}\n")
    owner, bootstrap = mock_cluster()
    fill(bootstrap, args.events, args.rows)
    print(
        f"### Kafka (mock cluster), {args.events:,} events, {args.rows:,} reference rows, "
        f"{PARTITIONS} partitions, medians of {args.rounds} interleaved rounds\n"
    )
    results = kafka_rounds(bootstrap, args.events, args.rounds, args.quix_python)
    print("\n".join(kafka_table(results, args.events)))
    if not args.quix_python:
        print(
            "\nQuix Streams: not run (needs --quix-python: it requires confluent-kafka < 2.13, "
            "this project pins 2.16)."
        )
    owner.flush(1)
    print(
        f"\n### The demo, {args.demo_events:,} events, {args.rows:,} reference rows, "
        f"medians of {args.rounds} interleaved rounds\n"
    )
    demo = demo_rounds(args.demo_events, args.rows, args.rounds)
    print("\n".join(demo_table(demo, args.demo_events)))
    print(f"\n### Latency, {args.rate:,} events/s offered for {args.seconds} s\n")
    latency = bench_kafka.bench_latency([args.rate], args.seconds, args.rows)
    print("\n".join(latency))
    print('\n### Goals of issue 17 ("Lean path")\n')
    print("\n".join(goals_table(results, demo, latency[-1], args.rate)))


if __name__ == "__main__":
    main()
