"""Every script in bench/ runs end to end at tiny sizes, so none can rot unnoticed.

Each runs as a user would start it, in a subprocess with `--smoke`, and must
exit 0 and print its result table. Nothing is measured here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"

SMOKE_RUNS: dict[str, tuple[list[str], list[str]]] = {
    "sink": (
        ["bench_sink.py", "--smoke"],
        ["| dataflow, 1 worker | 8 | 2,000 |", "| plain executemany (ceiling) | - | 2,000 |"],
    ),
    "sink with the lookup index": (
        ["bench_sink.py", "--smoke", "--lookup-index"],
        ["with the lookup_id index", "| threads, 1 per partition | 4 | 2,000 |"],
    ),
    "sink row": (
        ["bench_sink_row.py", "--smoke"],
        [
            "| 1 lookup | finish into the sink row (its binds built) |",
            "| 2 lookups | of which the stages column, templated |",
            "| 2 lookups | SQLite upsert, without the lookup_id index |",
        ],
    ),
    "enrich": (
        ["bench_enrich.py", "all", "--smoke"],
        [
            "| 64 shards, batch logic (ours) | hits only, 100 rows | 2,000 |",
            # Every event leaves once: the join's messages to its segments are not counted.
            "| 64 shards, batch logic (ours) | 1 in 20 misses, 100 rows | 2,000 |",
            "| 1,000 | 30 | 3 |",
            "| 1,000 | 100 |",
            "| 2 | 2,000 |",
        ],
    ),
    "kafka": (
        ["bench_kafka.py", "all", "--smoke"],
        ["| database |", "| 500 | 500 |"],
    ),
    "lean": (
        ["bench_lean.py", "--smoke"],
        [
            "| the product (Kafka → enrich → SQLite, 1 worker, recovery on) |",
            "| the product, null sink (counts rows, no database) |",
            "| plain loop (consume(10000) →",
            "| naive Bytewax (KafkaSource →",
            "Quix Streams: not run",
            "| -w 2 (threads, one process) |",
            "| 2 processes (-i/-a) |",
            "| 500 | 500 |",
        ],
    ),
    "decode": (
        ["bench_decode.py", "--smoke"],
        [
            "| demo records, fast path (product) | 2,125 |",
            "| demo records, checked path only (before) | 2,125 |",
            "| text times, fast path (product) | 2,125 |",
            "| parse only: msgspec (kept) |",
            "| tuple.__new__(Event, (...)) (kept) |",
        ],
    ),
    "as of": (
        ["bench_as_of.py", "--smoke"],
        [
            "| join | events | random keys: µs per event | ratio to latest "
            "| keys in turn: µs per event | ratio to latest |",
            "| latest (`ParkingJoin`) | 2,000 |",
            "| as_of, 4 versions per key, events after the newest (fast path) | 2,000 |",
            "| as_of, 4 versions per key, events spread over them (3 in 4 bisect) | 2,000 |",
            "| as_of: `versions.at(when)` (method, `row_at`, `bisect_right`) |",
            "| as_of, events spread over the versions (3 in 4 bisect) | 2,000 |",
            "| ratio to latest, events only |",
            "| as_of: the versions alone, no event | 0 |",
            "| bytes per version beyond the first |",
            "| latest | 1,000 | 1 |",
            "| as_of | 1,000 | 4 |",
        ],
    ),
    "publisher": (
        ["bench_publisher.py", "--smoke"],
        ["| full load, empty topic, 500 rows | 500 | 500 | 0 |", "| full load again"],
    ),
}


OWN_SMOKE_TESTS = {"bench_storm.py": "test_bench_storm_smoke.py"}
"""Scripts whose smoke run checks more than its lines, in a test module of its own."""


def test_every_bench_script_has_a_smoke_run() -> None:
    scripts = {path.name for path in BENCH.glob("bench_*.py")}
    assert all((ROOT / "tests" / test).is_file() for test in OWN_SMOKE_TESTS.values())
    assert scripts == {argv[0] for argv, _ in SMOKE_RUNS.values()} | set(OWN_SMOKE_TESTS)


@pytest.mark.parametrize("name", SMOKE_RUNS)
def test_bench_script_runs_in_smoke_mode(name: str, tmp_path: Path) -> None:
    argv, expected = SMOKE_RUNS[name]
    env = {key: value for key, value in os.environ.items() if not key.startswith("ENRICH_")}
    result = subprocess.run(
        [sys.executable, str(BENCH / argv[0]), *argv[1:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for line in expected:
        assert line in result.stdout, f"{line!r} not in:\n{result.stdout}"
