"""A real dataflow process that dies between writing a chunk and committing it, then resumes.

The entry point is `tests/crash_before_commit.py`: the production dataflow
whose sink ends the process with `os._exit` right after `executemany`, once.
The resumed run must leave exactly the table an uninterrupted run leaves:
the chunk that was written but not committed is not lost, and what the
resumed run replays is not duplicated.

Event ids are the records' origins (no event carries the configured id
field), so every id is written by exactly one chunk of the first run and the
crashed chunk's ids can be told apart.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

from flowrun import flow_env, init_recovery, start_flow, steady_column, tail

RUN_TIMEOUT = 120.0
SETTINGS: dict[str, object] = {
    "demo_events": 20_000,
    "demo_references": 2_000,
    "miss_timeout_seconds": 3_600,
    "event_id_field": "no_such_field",
}
ENTRY = "tests/crash_before_commit.py"
CRASHED = 86


def run(work: Path, args: list[str], env: dict[str, str], log: str, entry: str) -> int:
    proc = start_flow(work, args, env, log, entry)
    return proc.wait(timeout=RUN_TIMEOUT)


def table(db: Path, name: str) -> list[tuple[Any, ...]]:
    """Every row, by key, without `waited_ms` and `arrival_seq`: they come from the wall clock."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        names = [row[1] for row in conn.execute(f'PRAGMA table_info("{name}")')]
        kept = ", ".join(
            steady_column(n)
            for n in names
            if n not in {"waited_ms", "arrival_seq", "dead_lettered_at"}
        )
        return conn.execute(f'SELECT {kept} FROM "{name}" ORDER BY 1').fetchall()


def dead_letter_lines(path: Path) -> Counter[str]:
    lines: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        del record["dead_lettered_at"]
        lines[json.dumps(record, sort_keys=True)] += 1
    return lines


def test_a_crash_between_write_and_commit_loses_and_duplicates_nothing(
    tmp_path_factory: Any,
) -> None:
    baseline = tmp_path_factory.mktemp("baseline")
    code = run(baseline, [], flow_env(baseline, **SETTINGS), "run.log", "dataflows.enrich")
    assert code == 0, tail(baseline, "run.log")
    expected = table(baseline / "enriched.sqlite", "enriched_events")

    work = tmp_path_factory.mktemp("crash")
    args = init_recovery(work)
    marker = work / "crashed.json"
    env = flow_env(work, **SETTINGS) | {
        "CRASH_MARKER": str(marker),
        "CRASH_AT_WRITE": "12",
        "CRASH_EXIT_CODE": str(CRASHED),
    }
    code = run(work, args, env, "crash.log", ENTRY)
    assert code == CRASHED, tail(work, "crash.log")

    in_flight = set(json.loads(marker.read_text()))
    committed = {row[0] for row in table(work / "enriched.sqlite", "enriched_events")}
    assert in_flight, "the crashed write carried no rows"
    assert not in_flight & committed, "rows of the uncommitted chunk were stored"
    assert 0 < len(committed) < len(expected), "the crash came too early or too late to tell"

    code = run(work, args, env, "resume.log", ENTRY)
    assert code == 0, tail(work, "resume.log")
    found = table(work / "enriched.sqlite", "enriched_events")
    assert len({row[0] for row in found}) == len(found)
    assert in_flight <= {row[0] for row in found}
    assert found == expected
    assert table(work / "enriched.sqlite", "enrich_dead_letters") == []
    assert dead_letter_lines(work / "dead_letters.jsonl") == dead_letter_lines(
        baseline / "dead_letters.jsonl"
    )
