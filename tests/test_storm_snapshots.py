"""During a miss storm, each epoch's snapshots write what arrived, not the backlog.

Waiting events are parked in segments written in the epochs they fill and
then left alone (`operators.parking`); before, every shard's whole backlog
was written again in every epoch. What still grows with the backlog is the
join's book of which segment holds whose events: a few bytes per waiting
lookup id and second, bounded here too. Read from the recovery store of a
paced storm, with every snapshot kept (a backup interval longer than the run).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from itertools import pairwise
from pathlib import Path

from flowrun import ROOT, start_flow
from test_recovery_scaleout import finish, flow_env
from test_storm_recovery import FEED_DOWN

from operators.parking import waiting_in
from recovery_store.unpickle import loads

ENRICH_STEPS = ("enrich.enrich_", "enrich.park_")


def per_epoch(recovery: Path) -> list[tuple[int, int, int]]:
    """Per epoch in order: bytes the segments' and the joins' snapshots wrote, and the
    backlog a resume from that epoch would load (every key's newest snapshot so far)."""
    written: dict[int, list[int]] = {}
    counts: dict[int, dict[tuple[str, str], int]] = {}
    with closing(sqlite3.connect(f"file:{recovery / 'part-0.sqlite3'}?mode=ro", uri=True)) as db:
        for epoch, step, key, blob in db.execute(
            "SELECT snap_epoch, step_id, state_key, ser_change FROM snaps"
        ):
            if step.startswith(ENRICH_STEPS):
                sizes = written.setdefault(epoch, [0, 0])
                sizes[step.startswith("enrich.enrich_")] += len(blob or b"")
                state = None if blob is None else loads(blob)
                counts.setdefault(epoch, {})[step, key] = len(waiting_in(state)) if state else 0
    latest: dict[tuple[str, str], int] = {}
    found = []
    for epoch in sorted(written):
        latest.update(counts.get(epoch, {}))
        found.append((*written[epoch], sum(latest.values())))
    return found


def test_snapshot_bytes_per_epoch_follow_the_arrivals_not_the_backlog(tmp_path: Path) -> None:
    recovery = tmp_path / "recovery"
    recovery.mkdir(mode=0o700)
    init = [sys.executable, "-m", "bytewax.recovery", str(recovery), "1"]
    subprocess.run(init, cwd=ROOT, check=True)
    args = ["-r", str(recovery), "-s", "1", "-b", "86400"]
    env = flow_env(
        tmp_path, lookups=FEED_DOWN, demo_events=16_000, demo_references=2_000, demo_rate=2_000
    )
    finish([(start_flow(tmp_path, args, env, "run.log"), "run.log")], tmp_path)
    epochs = per_epoch(recovery)
    # Epochs in which the backlog grew: every event waits until the end of input.
    storm = [
        (parked, book, backlog, backlog - before)
        for (_, _, before), (parked, book, backlog) in pairwise(epochs)
        if backlog > before
    ]
    assert len(storm) >= 5, epochs
    third = len(storm) // 3
    early, late = storm[:third], storm[-third:]

    def per_arrival(part: list[tuple[int, int, int, int]]) -> float:
        return sum(parked for parked, _, _, _ in part) / sum(arrived for *_, arrived in part)

    assert late[-1][2] >= 3 * early[0][2], "the backlog did not grow enough to tell"
    # Writing the backlog every epoch made this grow as the backlog did (150 B each).
    assert per_arrival(late) <= 1.5 * per_arrival(early), epochs
    assert per_arrival(late) < 1_000, epochs
    assert all(book <= 20 * backlog + 5_000 for _, book, backlog, _ in storm), epochs
