"""The reference publisher's rows/s, from SQLite into librdkafka's mock cluster.

    python bench/bench_publisher.py                      # 100,000 rows, 10,000 changed
    python bench/bench_publisher.py --rows 50000 --changed 5000
    python bench/bench_publisher.py --smoke              # tiny sizes: that it runs, for the tests

The mock cluster runs in a process of its own, so the publisher (this
process) has the interpreter to itself, as in production. Each load is a
real `Publisher.load`, timed from the call to its return: connecting,
reading the topic's live keys (full loads), reading the table, producing,
and waiting for every delivery before the watermark is saved.

The mock cluster keeps only about 5 MB per partition, so each scenario gets
a fresh cluster, and every run checks that no partition lost its head and
that the topic holds exactly the records the loads reported. This host's
speed varies by tens of percent from run to run, so each scenario runs
`--repeat` times and the fastest run of each row is reported.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_enrich import machine  # noqa: E402
from dataflows.settings import load_settings  # noqa: E402
from reference.load import Publisher  # noqa: E402
from reference.report import LoadReport  # noqa: E402
from reference.settings import PublisherSettings  # noqa: E402
from reference.topic import live_keys  # noqa: E402

TOPIC = "reference"
COLUMNS = ("cusip", "name", "sector", "currency")
SECTORS = ("Energy", "Materials", "Industrials", "Utilities", "Health Care", "Financials")
CURRENCIES = ("USD", "EUR", "GBP", "JPY")
MOCK_CLUSTER = """
import sys, time
from confluent_kafka import Producer
owner = Producer({"test.mock.num.brokers": 1, "log_level": 3})
brokers = owner.list_topics(timeout=10).brokers.values()
print(",".join(f"{b.host}:{b.port}" for b in brokers), flush=True)
sys.stdin.read()
"""


@contextmanager
def mock_cluster() -> Iterator[str]:
    """A mock cluster in its own process; it ends when its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", MOCK_CLUSTER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def make_table(path: Path, rows: int) -> None:
    rng = random.Random(7)
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "CREATE TABLE securities (security_id TEXT PRIMARY KEY, cusip TEXT, name TEXT, "
            "sector TEXT, currency TEXT, updated_at INTEGER NOT NULL)"
        )
        conn.executemany(
            "INSERT INTO securities VALUES (?, ?, ?, ?, ?, ?)",
            (
                (
                    f"SEC{i:07d}",
                    f"{rng.randrange(10**9):09d}",
                    f"Company {i}",
                    rng.choice(SECTORS),
                    rng.choice(CURRENCIES),
                    1_700_000_000 + i // 1_000,
                )
                for i in range(rows)
            ),
        )


def change_rows(path: Path, changed: int, rows: int) -> None:
    """`changed` rows spread over the table get a new name and a newer change value."""
    step = max(1, rows // changed)
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany(
            "UPDATE securities SET name = name || ' (renamed)', updated_at = ? "
            "WHERE security_id = ?",
            ((1_800_000_000 + n, f"SEC{i:07d}") for n, i in enumerate(range(0, rows, step))),
        )


def settings_for(bootstrap: str, work: Path) -> PublisherSettings:
    return load_settings(
        PublisherSettings,
        kafka_brokers=bootstrap,
        publish_sqlite_path=work / "reference.sqlite",
        publish_state_path=work / "state.json",
        publish_columns=list(COLUMNS),
        progress_seconds=0,
        log_level="WARNING",
    )


def records_in_topic(bootstrap: str) -> int:
    """Every record the topic holds; refuses if the mock dropped the head of a partition."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench", "log_level": 3})
    total = 0
    try:
        for partition in range(4):
            low, high = probe.get_watermark_offsets(TopicPartition(TOPIC, partition), timeout=10)
            if low > 0:
                raise RuntimeError(f"the mock cluster dropped the head of {TOPIC}/{partition}")
            total += high
    finally:
        probe.close()
    return total


def row(what: str, report: LoadReport) -> tuple[float, str]:
    counts = report.counts
    return report.seconds, (
        f"| {what} | {counts.read:,} | {counts.published:,} | {counts.tombstones:,} | "
        f"{report.seconds:.2f} | {counts.read / report.seconds:,.0f} |"
    )


def full_then_incremental(rows: int, changed: int) -> list[tuple[float, str]]:
    with tempfile.TemporaryDirectory() as tmp, mock_cluster() as bootstrap:
        work = Path(tmp)
        make_table(work / "reference.sqlite", rows)
        publisher = Publisher(settings_for(bootstrap, work))
        full = publisher.load()
        change_rows(work / "reference.sqlite", changed, rows)
        incremental = publisher.load()
        sent = full.counts.published + incremental.counts.published
        if records_in_topic(bootstrap) != sent:
            raise RuntimeError("the topic does not hold the records the loads reported")
        started = time.perf_counter()
        live = live_keys([bootstrap], TOPIC, {})
        seconds = time.perf_counter() - started
        return [
            row(f"full load, empty topic, {rows:,} rows", full),
            row(f"incremental load, {incremental.counts.read:,} changed rows", incremental),
            (
                seconds,
                f"| reading the topic's live keys alone ({sent:,} records, {len(live):,} keys) "
                f"| {sent:,} | | | {seconds:.2f} | {sent / seconds:,.0f} |",
            ),
        ]


def full_over_populated_topic(rows: int) -> list[tuple[float, str]]:
    """A second full load, which first reads the live keys the first one published."""
    with tempfile.TemporaryDirectory() as tmp, mock_cluster() as bootstrap:
        work = Path(tmp)
        make_table(work / "reference.sqlite", rows)
        publisher = Publisher(settings_for(bootstrap, work))
        first = publisher.load()
        again = publisher.load(full=True)
        if records_in_topic(bootstrap) != first.counts.published + again.counts.published:
            raise RuntimeError("the topic does not hold the records the loads reported")
        return [row(f"full load again, topic holding {rows:,} live keys", again)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--changed", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks it runs, measures nothing"
    )
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.changed, args.repeat = 500, 50, 1
    runs = [
        # Two full loads publish every row twice; half the rows stay under the mock's retention.
        full_then_incremental(args.rows, args.changed) + full_over_populated_topic(args.rows // 2)
        for _ in range(args.repeat)
    ]
    print(f"machine: {machine()}")
    print(f"{len(COLUMNS)} published columns, batch size 10,000, fastest of {args.repeat} runs\n")
    print("| load | rows read | published | tombstones | seconds | rows/s |")
    print("|---|---|---|---|---|---|")
    for timings in zip(*runs, strict=True):
        print(min(timings)[1])


if __name__ == "__main__":
    main()
