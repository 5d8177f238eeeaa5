"""Measures the enrichment step and the whole demo; prints Markdown tables.

    python bench/bench_enrich.py step      # events/s per worker, hits and misses
    python bench/bench_enrich.py memory    # bytes per held reference row
    python bench/bench_enrich.py snapshot  # snapshot cost against table size
    python bench/bench_enrich.py demo      # the whole demo, 1 and 2 workers
    python bench/bench_enrich.py all
    python bench/bench_enrich.py all --smoke  # tiny sizes: that it runs, for the tests

Each measurement runs in a fresh process where memory matters, and every
dataflow run has recovery on with 1 s epochs, as in production.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import platform
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.operators import StatefulLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataflows.flow import enrich_step  # noqa: E402
from operators import routing  # noqa: E402
from operators.decode import Decoder, ReferenceSchema  # noqa: E402
from operators.enrichment import EnrichConfig, ShardEnricher  # noqa: E402
from operators.parking import Parcels  # noqa: E402
from operators.records import Event, Kind, RawRecord, RefUpdate  # noqa: E402

BATCH = 10_000
SECTORS = ["Energy", "Materials", "Industrials", "Utilities", "Health Care", "Financials"]


def reference_updates(count: int, start: int = 0) -> list[RefUpdate]:
    """Rows of 3 short columns with fresh strings, as a decoder would make them."""
    return [
        RefUpdate(
            f"SEC{i:07d}",
            (f"{i:09d}", f"Company {i}", SECTORS[i % len(SECTORS)]),
            1,
            "bench",
        )
        for i in range(start, start + count)
    ]


def events(count: int, keys: int, miss_every: int = 0) -> list[Event]:
    """Quote events over `keys` ids; every `miss_every`-th asks for an absent id."""
    out = []
    for i in range(count):
        key = f"SEC{i % keys:07d}"
        if miss_every and i % miss_every == 0:
            key = f"NEW{i % 1000:07d}"
        out.append(Event(f"Q{i}", key, None, {"price": 1.0, "size": 100}, "bench"))
    return out


class _ListPartition(StatefulSourcePartition[Any, int]):
    def __init__(self, batches: list[list[Any]], start: int) -> None:
        self._batches = batches
        self._next = start

    def next_batch(self) -> list[Any]:
        if self._next >= len(self._batches):
            raise StopIteration
        self._next += 1
        return self._batches[self._next - 1]

    def snapshot(self) -> int:
        return self._next


class ListSource(FixedPartitionedSource[Any, int]):
    """Pre-built batches from memory, so the source costs nothing measurable."""

    def __init__(self, batches: list[list[Any]]) -> None:
        self._batches = batches

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _ListPartition:
        return _ListPartition(self._batches, resume_state or 0)


class _Count(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        # The join's messages to its segments travel in the same stream; they are no output.
        CountSink.seen += sum(len(outputs) for _, outputs in items if type(outputs) is not Parcels)


class CountSink(DynamicSink[Any]):
    seen = 0

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Count:
        return _Count()


def run_with_recovery(flow: Dataflow) -> float:
    """Run with recovery on, as the job runs: 1 s epochs, its GC threshold.

    The pre-built input is frozen out of the collector first: a real source
    does not hold its whole input in memory for the collector to rescan.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, *gc.get_threshold()[1:])
    with tempfile.TemporaryDirectory() as tmp:
        init_db_dir(Path(tmp), 1)
        started = time.perf_counter()
        run_main(
            flow,
            epoch_interval=timedelta(seconds=1),
            recovery_config=RecoveryConfig(tmp),
        )
        return time.perf_counter() - started


def sharded_flow(items: list[Any], config: EnrichConfig, shards: int) -> Dataflow:
    names = routing.names(shards)
    flow = Dataflow("bench_sharded")
    raw = op.input(
        "in", flow, ListSource([items[i : i + BATCH] for i in range(0, len(items), BATCH)])
    )
    keyed = op.flat_map_batch("route", raw, lambda batch: routing.by_shard(batch, names))
    # The dataflow's own step: the join, and the segments its misses are parked in.
    enriched = enrich_step("bench", keyed, config)
    op.output("out", enriched, CountSink())
    return flow


class _NaiveLogic(StatefulLogic[Any, Any, Any]):
    """One Bytewax key per lookup id, row in the snapshot: the simple baseline."""

    def __init__(self, state: Any) -> None:
        self.row = state

    def on_item(self, item: Any) -> tuple[list[Any], bool]:
        if type(item) is RefUpdate:
            self.row = item.row
            return [], False
        return [[(item, self.row)]], False

    def snapshot(self) -> Any:
        return self.row


def naive_flow(items: list[Any]) -> Dataflow:
    flow = Dataflow("bench_naive")
    raw = op.input(
        "in", flow, ListSource([items[i : i + BATCH] for i in range(0, len(items), BATCH)])
    )
    keyed = op.key_on("key", raw, lambda item: item.lookup_id)
    enriched = op.stateful("enrich", keyed, _NaiveLogic)
    op.output("out", enriched, CountSink())
    return flow


def dict_join(rows: list[RefUpdate], stream: list[Event]) -> float:
    """The ceiling: a plain loop over a dict, no runtime, no state handling."""
    table = {update.lookup_id: update.row for update in rows}
    started = time.perf_counter()
    out = []
    for event in stream:
        row = table.get(event.lookup_id)
        if row is not None:
            out.append((event, row))
    return time.perf_counter() - started


def bench_step(n_events: int, n_rows: int, repeats: int = 3) -> list[str]:
    """Best of `repeats` runs: this shared host's speed varies by tens of percent."""
    config = EnrichConfig(timeout_seconds=3600.0, miss_policy="defaults", defaults=(None,) * 3)
    rows = reference_updates(n_rows)
    lines = [
        "| design | workload | events out | seconds | events/s | items/s (events + rows) |",
        "|---|---|---|---|---|---|",
    ]
    for label, miss_every in (("hits only", 0), ("1 in 20 misses", 20)):
        stream = events(n_events, n_rows, miss_every)
        items = rows + stream
        designs: list[tuple[str, Callable[[], Dataflow], int]] = [
            ("64 shards, batch logic (ours)", partial(sharded_flow, items, config, 64), repeats),
            ("one key per id (baseline)", partial(naive_flow, items), 1),
        ]
        for name, make, runs in designs:
            seconds = float("inf")
            for _ in range(runs):
                CountSink.seen = 0
                seconds = min(seconds, run_with_recovery(make()))
            lines.append(
                f"| {name} | {label}, {n_rows:,} rows | {CountSink.seen:,} | {seconds:.2f} | "
                f"{n_events / seconds:,.0f} | {(n_events + n_rows) / seconds:,.0f} |"
            )
    stream = events(n_events, n_rows)
    seconds = min(dict_join(rows, stream) for _ in range(repeats))
    lines.append(
        f"| plain dict-join loop (ceiling) | hits only, {n_rows:,} rows | {n_events:,} | "
        f"{seconds:.2f} | {n_events / seconds:,.0f} | (table built outside the timing) |"
    )
    return lines


def measure_memory(n_rows: int, width: int = 3, kept: int = 3) -> tuple[float, float]:
    """Bytes held per reference row: keys, values, row tuples and the dicts.

    Rows go through the real decoder from JSON bytes, so every value is a
    fresh string, as in production. Each row has `width` columns (cusip,
    name, sector, then filler) of which the lookup keeps the first `kept`:
    the projection the decoder applies before anything reaches state.
    """
    names = [*("cusip", "name", "sector"), *(f"attr_{n:02d}" for n in range(3, width))]
    decoder = Decoder(
        lookup_field="security_id",
        event_id_field="event_id",
        event_time_field="ts",
        event_fields={},
        references={"security": ReferenceSchema(dict.fromkeys(names[:kept], "str"))},
        max_record_bytes=65_536,
    )
    config = EnrichConfig(timeout_seconds=60.0)
    shard_names = routing.names(64)
    shards = {name: ShardEnricher(config) for name in shard_names}
    gc.collect()
    tracemalloc.start()
    for start in range(0, n_rows, BATCH):
        chunk = [
            decoder.decode(
                RawRecord(
                    Kind.REFERENCE,
                    f"SEC{i:07d}".encode(),
                    _row_json(i, names),
                    "b",
                    lookup="security",
                )
            )
            for i in range(start, min(start + BATCH, n_rows))
        ]
        updates = [rec for rec in chunk if type(rec) is RefUpdate]
        if len(updates) != len(chunk):
            raise RuntimeError("the benchmark's reference rows must all decode")
        for shard, items in routing.by_shard(updates, shard_names):
            shards[shard].process(items, 0.0)
        del chunk
    gc.collect()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sum(len(s.rows) for s in shards.values()) == n_rows
    return held / n_rows, peak / n_rows


def _row_json(i: int, names: list[str]) -> bytes:
    values = {
        "cusip": f"{i:09d}",
        "name": f"Company {i}",
        "sector": SECTORS[i % len(SECTORS)],
        **{name: f"{name}-{i % 997}" for name in names[3:]},
        "version": 1,
    }
    return json.dumps(values, separators=(",", ":")).encode()


def bench_snapshot(sizes: tuple[int, ...] = (10_000, 1_000_000), repeats: int = 1000) -> list[str]:
    lines = [
        "| rows held in shard | pending events | snapshot() time | pickled bytes |",
        "|---|---|---|---|",
    ]
    config = EnrichConfig(timeout_seconds=60.0)
    for n_rows in sizes:
        for pending in (0, 100):
            shard = ShardEnricher(config)
            shard.process(reference_updates(n_rows), 0.0)
            shard.process(events(pending, 1, 1), 0.0)
            started = time.perf_counter()
            for _ in range(repeats):
                state = pickle.dumps(shard.snapshot())
            per_call = (time.perf_counter() - started) / repeats
            lines.append(f"| {n_rows:,} | {pending} | {per_call * 1e6:,.1f} µs | {len(state):,} |")
    return lines


def run_demo(events_count: int, references: int, workers: int = 1, processes: int = 1) -> float:
    """Seconds (wall) of one demo run through `python -m bytewax.run`, recovery on.

    `workers` are threads of one process (`-w`); `processes` > 1 starts that
    many local processes of one worker each (`-i`/`-a`), which share no GIL.
    """
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "ENRICH_DEMO_EVENTS": str(events_count),
            "ENRICH_DEMO_REFERENCES": str(references),
            "ENRICH_SQLITE_PATH": f"{tmp}/out.sqlite",
            "ENRICH_DEAD_LETTER_PATH": f"{tmp}/dlq.jsonl",
            "ENRICH_PROGRESS_SECONDS": "0",
            "PYTHONPATH": str(ROOT),
        }
        Path(tmp, "rec").mkdir()
        init_db_dir(Path(tmp, "rec"), workers * processes)
        run = [sys.executable, "-m", "bytewax.run", "dataflows.enrich", "-r", f"{tmp}/rec",
               "-s", "1", "-b", "0"]  # fmt: skip
        if processes == 1:
            commands = [[*run, "-w", str(workers)]]
        else:
            addresses = ";".join(f"127.0.0.1:{port}" for port in free_ports(processes))
            commands = [[*run, "-i", str(i), "-a", addresses] for i in range(processes)]
        logs = [Path(tmp, f"process-{i}.log") for i in range(len(commands))]
        started = time.perf_counter()
        children = []
        for command, log in zip(commands, logs, strict=True):
            with log.open("wb") as out:
                children.append(subprocess.Popen(command, env=env, stdout=out, stderr=out))
        failed = _wait_all(children, DEMO_TIMEOUT_SECONDS)
        seconds = time.perf_counter() - started
        if failed is not None:
            index, code = failed
            raise RuntimeError(f"the demo failed ({code}): {logs[index].read_text()[-3000:]}")
        return seconds


DEMO_TIMEOUT_SECONDS = 600.0


def _wait_all(children: list[subprocess.Popen[bytes]], timeout: float) -> tuple[int, int] | None:
    """Wait for every child; the first that fails (or the deadline) stops the others, which
    would otherwise wait for their lost peer forever. Returns (index, exit code) of a failure."""
    deadline = time.monotonic() + timeout
    while True:
        codes = [child.poll() for child in children]
        failed = next(((i, code) for i, code in enumerate(codes) if code), None)
        if failed is None and time.monotonic() > deadline:
            failed = (0, -1)
        if failed is not None:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            return failed
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.05)


def free_ports(count: int) -> list[int]:
    """Ports free now on loopback, for local processes of one Bytewax cluster."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def bench_demo(events_count: int = 200_000, references: int = 10_000) -> list[str]:
    lines = ["| workers | events | seconds | events/s |", "|---|---|---|---|"]
    for workers in (1, 2):
        seconds = run_demo(events_count, references, workers)
        lines.append(
            f"| {workers} | {events_count:,} | {seconds:.2f} | {events_count / seconds:,.0f} |"
        )
    return lines


def in_subprocess(func: str, *args: Any, module: str = "bench.bench_enrich") -> Any:
    """Run `module.func(*args)` in a fresh interpreter so earlier runs do not skew it (nor
    the JSON parser's global string cache share strings between cases); its JSON result."""
    code = f"import json, {module} as b; print(json.dumps(b.{func}(*{args!r})))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["step", "memory", "snapshot", "demo", "all"])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks it runs, measures nothing"
    )
    args = parser.parse_args()
    memory_sizes: tuple[tuple[int, int, int], ...] = (
        (100_000, 3, 3),
        (1_000_000, 3, 3),
        (100_000, 30, 30),
        (100_000, 30, 3),
    )
    snapshot_args: tuple[Any, ...] = ()
    demo_sizes = (200_000, 10_000)
    if args.smoke:
        args.events, args.rows = 2_000, 100
        memory_sizes = ((1_000, 3, 3), (1_000, 30, 3))
        snapshot_args = ((100, 1_000), 10)
        demo_sizes = (2_000, 100)
    sections: dict[str, Callable[[], Iterator[str] | list[str]]] = {
        "step": lambda: in_subprocess("bench_step", args.events, args.rows),
        "memory": lambda: [
            "| rows held | columns in the row | columns kept | bytes per row held "
            "| peak bytes per row while loading |",
            "|---|---|---|---|---|",
            *(
                "| {:,} | {} | {} | {:,.0f} | {:,.0f} |".format(
                    n, width, kept, *in_subprocess("measure_memory", n, width, kept)
                )
                for n, width, kept in memory_sizes
            ),
        ],
        "snapshot": lambda: in_subprocess("bench_snapshot", *snapshot_args),
        "demo": lambda: bench_demo(*demo_sizes),
    }
    print(f"Machine: {machine()}\n")
    for name, run in sections.items():
        if args.what in (name, "all"):
            print(f"### {name}\n")
            print("\n".join(run()))
            print()


if __name__ == "__main__":
    main()
