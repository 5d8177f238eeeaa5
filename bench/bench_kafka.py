"""End to end over Kafka (librdkafka's mock cluster): throughput by stage, and latency.

    python bench/bench_kafka.py throughput   # events/s, one worker, stage by stage
    python bench/bench_kafka.py latency      # p50/p99 event-to-sink at a fixed offered rate
    python bench/bench_kafka.py all
    python bench/bench_kafka.py all --smoke  # tiny sizes: that it runs, for the tests

The mock cluster runs in this process; every dataflow runs in a fresh
interpreter with recovery on (1 s epochs), reading real Kafka sockets.
Throughput cuts the dataflow after each stage (read, decode, join, database)
so the difference between rows says where the time goes; it is timed from the
first event read to the last one reaching the end of the cut, so process
start-up and connecting are not counted. The mock cluster keeps about 5 MB per partition,
so a run stays under that (150,000 events over 4 partitions) and `fill`
checks that nothing was dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import (
    DynamicSink,
    StatelessSinkPartition,
)
from confluent_kafka import Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_enrich import machine, run_with_recovery  # noqa: E402
from config.lookups import Lookup  # noqa: E402
from dataflows.flow import build_flow, decoder, kafka_sources, main_sink  # noqa: E402
from dataflows.settings import Settings, load_settings  # noqa: E402
from operators.decode import decode_batch  # noqa: E402
from operators.records import Kind, RawRecord  # noqa: E402
from operators.sink_rows import EVENT_TIME  # noqa: E402
from sinks.upsert import UpsertSink  # noqa: E402

SECURITIES = Lookup(
    name="security",
    key_field="security_id",
    columns={"cusip": "str", "name": "str", "sector": "str"},
    topic="reference",
)
"""The one lookup measured: the securities this benchmark fills its reference topic with."""
SECTORS = ["Energy", "Materials", "Industrials", "Utilities", "Health Care", "Financials"]
STAGES = ("read", "decode", "join", "database")


def mock_cluster() -> tuple[Producer, str]:
    owner = Producer({"test.mock.num.brokers": 1, "log_level": 3})
    brokers = owner.list_topics(timeout=10).brokers.values()
    return owner, ",".join(f"{b.host}:{b.port}" for b in brokers)


def producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
            "log_level": 3,
        }
    )


def send(prod: Producer, topic: str, key: bytes, value: bytes) -> None:
    while True:
        try:
            prod.produce(topic, value, key)
            return
        except BufferError:
            prod.poll(0.05)


def quote(i: int, keys: int, now: float) -> tuple[bytes, bytes]:
    key = f"SEC{i % keys:07d}"
    value = {
        "event_id": f"Q{i}",
        "security_id": key,
        "price": round(100 + (i % 997) / 10, 2),
        "size": 100 * (1 + i % 50),
        "ts": now,
    }
    return key.encode(), json.dumps(value).encode()


def fill(bootstrap: str, events: int, rows: int) -> None:
    prod = producer(bootstrap)
    for i in range(rows):
        row = {"cusip": f"{i:09d}", "name": f"Company {i}", "sector": SECTORS[i % 6], "version": 1}
        send(prod, "reference", f"SEC{i:07d}".encode(), json.dumps(row).encode())
    now = time.time()
    for i in range(events):
        send(prod, "events", *quote(i, rows, now))
        if i % 10_000 == 0:
            prod.poll(0)
    assert prod.flush(60) == 0
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "log_level": 3})
    for topic in ("events", "reference") if events else ("reference",):
        for part in range(4):
            low, _ = probe.get_watermark_offsets(TopicPartition(topic, part), timeout=10)
            if low > 0:
                raise RuntimeError(f"the mock cluster dropped the head of {topic}/{part}")
    probe.close()


def settings_for(bootstrap: str, work: Path, stop_at_end: bool) -> Settings:
    return load_settings(
        source="kafka",
        kafka_brokers=bootstrap,
        kafka_stop_at_end=stop_at_end,
        # One lookup, the securities: the topic this benchmark fills.
        lookups=[SECURITIES],
        miss_timeout_seconds=3600,
        sqlite_path=work / "enriched.sqlite",
        dead_letter_path=work / "dead_letters.jsonl",
        progress_seconds=0,
    )


class Meter:
    """Events that reached the end of the cut, and when the first and last did."""

    events = 0
    first = 0.0
    last = 0.0

    @classmethod
    def start(cls) -> None:
        if not cls.first:
            cls.first = time.perf_counter()

    @classmethod
    def add(cls, count: int) -> None:
        cls.last = time.perf_counter()
        cls.events += count

    @classmethod
    def rate(cls) -> float:
        return cls.events / (cls.last - cls.first)


COUNTERS: dict[str, Callable[[list[Any]], int]] = {
    "read": lambda items: sum(type(r) is RawRecord and r.kind is Kind.EVENT for r in items),
    "decode": lambda items: sum(batch.events for batch in items),
    "join": lambda items: sum(len(group) for _, group in items),
}


class _Discard(StatelessSinkPartition[Any]):
    def __init__(self, count: Callable[[list[Any]], int]) -> None:
        self._count = count

    def write_batch(self, items: list[Any]) -> None:
        Meter.add(self._count(items))


class Discard(DynamicSink[Any]):
    def __init__(self, stage: str) -> None:
        self._count = COUNTERS[stage]

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Discard:
        return _Discard(self._count)


class _Started(StatefulSourcePartition[RawRecord, Any]):
    """Starts the meter when the first events are read."""

    def __init__(self, inner: StatefulSourcePartition[RawRecord, Any]) -> None:
        self._inner = inner

    def next_batch(self) -> list[RawRecord]:
        batch = cast(list[RawRecord], self._inner.next_batch())  # a list: the inner is ours
        if batch:
            Meter.start()
        return batch

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class MeteredEvents(FixedPartitionedSource[RawRecord, Any]):
    """The real events source, its partitions wrapped to start the meter."""

    def __init__(self, inner: FixedPartitionedSource[RawRecord, Any]) -> None:
        self._inner = inner

    def list_parts(self) -> list[str]:
        return self._inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _Started:
        return _Started(self._inner.build_part(step_id, for_part, resume_state))


def metered_sources(settings: Settings) -> dict[str, Any]:
    sources = kafka_sources(settings)
    events = sources["events_in"]
    assert isinstance(events, FixedPartitionedSource)
    return {**sources, "events_in": MeteredEvents(events)}


def cut_flow(settings: Settings, stage: str) -> Dataflow:
    """The dataflow up to `stage`; `join` is the real one with the database left out."""
    if stage == "join":
        return build_flow(settings, metered_sources(settings), sink=Discard(stage))
    if stage == "database":
        return build_flow(settings, metered_sources(settings), metered_sink(settings))
    flow = Dataflow("enrich")
    sources = metered_sources(settings)
    raw = op.merge("raw", *(op.input(name, flow, src) for name, src in sources.items()))
    if stage == "decode":
        check = decoder(settings)
        first = settings.lookups[0].name
        raw = op.flat_map_batch("decode", raw, lambda batch: [decode_batch(check, first, batch)])
    op.output("out", raw, Discard(stage))
    return flow


def run_stage(bootstrap: str, stage: str, events: int) -> float:
    """One cut of the dataflow to the end of the topics; events/s (in a fresh process)."""
    with tempfile.TemporaryDirectory() as tmp:
        run_with_recovery(cut_flow(settings_for(bootstrap, Path(tmp), stop_at_end=True), stage))
        if Meter.events != events:
            raise RuntimeError(f"{Meter.events} of {events} events reached the end of {stage}")
        return Meter.rate()


def in_subprocess(*args: str) -> Any:
    result = subprocess.run(
        [sys.executable, __file__, "_child", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_throughput(events: int, rows: int, runs: int = 2) -> list[str]:
    owner, bootstrap = mock_cluster()
    fill(bootstrap, events, rows)
    lines = [
        f"{events:,} events, {rows:,} reference rows, 4 partitions per topic, one worker:",
        "",
        "| dataflow cut after | events/s | µs per event | µs added by the stage |",
        "|---|---|---|---|",
    ]
    previous = 0.0
    for stage in STAGES:
        rate = max(in_subprocess("stage", bootstrap, stage, str(events)) for _ in range(runs))
        micros = 1e6 / rate
        lines.append(f"| {stage} | {rate:,.0f} | {micros:.2f} | {micros - previous:.2f} |")
        previous = micros
    owner.flush(1)
    return lines


def metered_sink(settings: Settings, out: Path | None = None) -> UpsertSink:
    """The database sink, counting rows as they commit; with `out`, each row's
    event-to-commit seconds. Told by the sink at each commit, on the thread that
    wrote, so rows still in flight (`ENRICH_SINK_OVERLAP`) are not counted early."""
    lines = None if out is None else out.open("a")

    def committed(rows: Sequence[Sequence[Any]], at: float) -> None:
        Meter.add(len(rows))
        if lines is not None:
            lines.write(
                "".join(
                    f"{at - row[EVENT_TIME]:.6f}\n" for row in rows if row[EVENT_TIME] is not None
                )
            )
            lines.flush()

    return main_sink(settings, on_commit=committed)


def latency_flow(bootstrap: str, work: str) -> None:
    """Tails the topics until killed, writing each row's latency to `work/latency.txt`."""
    settings = settings_for(bootstrap, Path(work), stop_at_end=False)
    run_with_recovery(build_flow(settings, sink=metered_sink(settings, Path(work) / "latency.txt")))


def bench_latency(rates: list[int], seconds: int, rows: int) -> list[str]:
    lines = [
        "| offered events/s | events | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    for rate in rates:
        lines.append(latency_at(rate, seconds, rows))
    return lines


def latency_at(rate: int, seconds: int, rows: int) -> str:
    """One table row: a fresh cluster and dataflow, `rate` events/s offered for `seconds`."""
    owner, bootstrap = mock_cluster()
    fill(bootstrap, 0, rows)
    with tempfile.TemporaryDirectory() as tmp:
        latencies = Path(tmp, "latency.txt")
        flow = subprocess.Popen(
            [sys.executable, __file__, "_child", "latency_flow", bootstrap, tmp],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            prod = producer(bootstrap)
            # Warm up until the first row is written: start-up is not latency.
            send(prod, "events", *quote(0, rows, time.time()))
            prod.flush(10)
            while not latencies.exists() or not latencies.read_text():
                time.sleep(0.1)
            total = rate * seconds
            tick = 0.005
            per_tick = max(1, int(rate * tick))
            started = time.perf_counter()
            for i in range(1, total + 1):
                send(prod, "events", *quote(i, rows, time.time()))
                if i % per_tick == 0:
                    prod.poll(0)
                    delay = started + i / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
            prod.flush(60)
            deadline = time.monotonic() + 120
            while len(latencies.read_text().splitlines()) < total + 1:
                if time.monotonic() > deadline:
                    # The mock cluster keeps ~5 MB per partition: a consumer
                    # that falls that far behind loses the head it did not read.
                    raise RuntimeError("the dataflow fell too far behind to write every event")
                time.sleep(0.2)
        finally:
            flow.kill()
            flow.wait()
        values = sorted(float(line) for line in latencies.read_text().splitlines()[1:])
    owner.flush(1)

    def at(q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000

    p50, p99, top = at(0.5), at(0.99), values[-1] * 1000
    return f"| {rate:,} | {len(values):,} | {p50:.1f} | {p99:.1f} | {top:.1f} |"


def main() -> None:
    if sys.argv[1] == "_child":
        what, *rest = sys.argv[2:]
        if what == "stage":
            print(json.dumps(run_stage(rest[0], rest[1], int(rest[2]))))
        else:
            latency_flow(*rest)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["throughput", "latency", "all"])
    parser.add_argument("--events", type=int, default=150_000)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rates", type=int, nargs="+", default=[5_000, 20_000, 50_000])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks it runs, measures nothing"
    )
    args = parser.parse_args()
    if args.smoke:
        args.events, args.rows, args.rates, args.seconds = 2_000, 100, [500], 1
    random.seed(0)
    print(f"Machine: {machine()}\n")
    if args.what in ("throughput", "all"):
        print("### throughput\n")
        runs = 1 if args.smoke else 2
        print("\n".join(bench_throughput(args.events, args.rows, runs)), "\n")
    if args.what in ("latency", "all"):
        print("### latency\n")
        print("\n".join(bench_latency(args.rates, args.seconds, args.rows)), "\n")


if __name__ == "__main__":
    main()
