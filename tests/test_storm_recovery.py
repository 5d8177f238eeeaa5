"""A miss storm survives kill -9: waiting events come back from the snapshot, once each.

The first run starts with the reference feed "down" (the security lookup's
filter matches no row, so every event waits), and is killed once its
recovery store holds a few thousand waiting events. The resume runs with the
feed back (no filter): the events that waited at the crash must leave exactly
once, late-enriched when their row is published again later in the stream,
else under the miss policy at the end of input.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from pathlib import Path

from flowrun import ResumePoint, init_recovery, kill_group, resume_point, start_flow, tail
from test_recovery_scaleout import (
    EVENTS,
    PACED_RATE,
    RUN_TIMEOUT,
    dead_letters,
    finish,
    flow_env,
    read_table,
)

from config.lookups import DEMO_LOOKUPS, Lookup

NO_ROW = [{"field": "sector", "op": "==", "value": "no such sector"}]
FEED_DOWN = [
    Lookup.model_validate({**DEMO_LOOKUPS[0].model_dump(), "filter": NO_ROW}),
    *DEMO_LOOKUPS[1:],
]
WAITING_AT_KILL = 3_000


def kill_when_waiting(work: Path, log: str) -> ResumePoint:
    """Run with the feed down; SIGKILL once a resume would restore enough waiting events."""
    proc = start_flow(
        work,
        init_recovery(work),
        flow_env(work, demo_rate=PACED_RATE, lookups=FEED_DOWN),
        log,
    )
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while True:
            assert proc.poll() is None, f"{log} ended before the kill:\n{tail(work, log)}"
            assert time.monotonic() < deadline, f"{log} never held {WAITING_AT_KILL} events"
            try:
                point = resume_point(work / "recovery")
            except (sqlite3.OperationalError, TypeError):
                point = None  # the store is being written, or holds no execution yet
            if point and len(point.pending) >= WAITING_AT_KILL:
                break
            time.sleep(0.05)
    finally:
        kill_group(proc)
    return resume_point(work / "recovery")


def test_events_waiting_at_a_kill_leave_once_after_the_resume(tmp_path: Path) -> None:
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    finish([(start_flow(baseline, [], flow_env(baseline), "run.log"), "run.log")], baseline)
    expected = read_table(baseline / "enriched.sqlite")

    work = tmp_path / "storm"
    work.mkdir()
    point = kill_when_waiting(work, "crash.log")
    assert len(point.pending) < EVENTS * 0.75, "killed too late, nothing left to resume"
    waiting = {w.event.event_id for w in point.pending}
    for w in point.pending:
        _, _, part, index = w.event.origin.split("/")
        # Behind the resume offset: only the restored state can bring these back.
        assert int(index) < point.offsets[part], w.event.origin

    args = ["-r", str(work / "recovery"), "-s", "0", "-b", "0"]
    finish([(start_flow(work, args, flow_env(work), "resume.log"), "resume.log")], work)

    table = read_table(work / "enriched.sqlite")
    ids = [row[0] for row in table]
    assert len(ids) == len(set(ids)), "an event was written twice"
    assert set(ids) == {row[0] for row in expected}, "an event was lost or invented"
    assert dead_letters(work / "dead_letters.jsonl") == dead_letters(
        baseline / "dead_letters.jsonl"
    ), "a dead letter was lost or written twice"
    with sqlite3.connect(work / "enriched.sqlite") as conn:
        written = {
            event_id: (status, seq)
            for event_id, status, seq in conn.execute(
                "SELECT event_id, status, arrival_seq FROM enriched_events"
            )
        }
    # A later copy of an event id (the demo repeats some) may have hit after the resume:
    # its row stands, having arrived later; every other row is the waiting copy's own.
    newest: dict[str, int] = {}
    for w in point.pending:
        newest[w.event.event_id] = max(w.event.seq, newest.get(w.event.event_id, 0))
    for event_id, seq in newest.items():
        assert written[event_id][1] >= seq, f"an older copy of {event_id} overwrote a newer"
    later = {event_id for event_id, seq in newest.items() if written[event_id][1] > seq}
    outcomes = Counter(written[event_id][0] for event_id in waiting - later)
    assert set(outcomes) <= {"late_enriched", "lookup_miss"}, outcomes
    assert outcomes["late_enriched"] > 0, "no waiting event met its row again"
    assert outcomes["lookup_miss"] > 0, "no waiting event left under the miss policy"


def test_at_the_memory_budget_the_oldest_leave_as_counted_overflow(tmp_path: Path) -> None:
    """A storm over a tiny budget: events leave early as `overflow`, none is lost or repeated.

    0.5 MB over 2 lookups and 64 shards is about 3.9 KB, some 20 waiting
    events, per shard: far fewer than the storm's 20,000.
    """
    env = flow_env(tmp_path, lookups=FEED_DOWN, max_pending_mb=0.5)
    finish([(start_flow(tmp_path, [], env, "run.log"), "run.log")], tmp_path)
    with sqlite3.connect(tmp_path / "enriched.sqlite") as conn:
        reasons = Counter(
            dict(conn.execute("SELECT miss_reason, COUNT(*) FROM enriched_events GROUP BY 1"))
        )
        ids = conn.execute("SELECT COUNT(DISTINCT event_id), COUNT(*) FROM enriched_events")
        distinct, rows = ids.fetchone()
    assert distinct == rows
    # Every security lookup missed: each event left as overflow or at the end of input.
    assert set(reasons) == {"overflow", "end_of_input"}, reasons
    assert reasons["end_of_input"] <= 64 * 21
    assert reasons["overflow"] > rows / 2
