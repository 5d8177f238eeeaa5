"""Event-time timeouts make a run's table a function of its input: kill -9 and resume
any number of times, and the table is the uninterrupted one, row by row.

Every run is `python -m bytewax.run dataflows.enrich` on the demo with a miss
timeout short enough that events time out mid-stream (its rows come up to
four seconds of event time after their quotes), on the event clock. With the
processing clock the same kills leave a different table: the clock runs
while the job is down, and how many events time out depends on how fast the
run went (`test_the_processing_clock_depends_on_the_run` shows it without a
kill: two uninterrupted paced runs at different speeds differ).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from flowrun import flow_env, init_recovery, resume_point, start_flow
from test_recovery_scaleout import (
    Outcome,
    assert_same_outcome,
    finish,
    kill_when,
    outcome,
    resume_epochs,
)

from config.lookups import DEMO_LOOKUPS
from recovery_store.render import as_text
from recovery_store.report import build_report
from recovery_store.store import read_store
from sources.demo import slot_time

EVENTS = 20_000
REFERENCES = 2_000
TIMEOUT = 1.5
"""Seconds: late rows come 0.2 to 4 s of event time after their first quote, so some
release their events and some come too late."""


def env(work: Path, **settings: object) -> dict[str, str]:
    base: dict[str, object] = {
        "demo_events": EVENTS,
        "demo_references": REFERENCES,
        "miss_timeout_seconds": TIMEOUT,
    }
    return flow_env(work, **{**base, **settings})


def run(work: Path, args: list[str], **settings: object) -> None:
    finish([(start_flow(work, args, env(work, **settings), "run.log"), "run.log")], work)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """One uninterrupted run, on the demo's default clock (event time)."""
    work = tmp_path_factory.mktemp("uninterrupted")
    run(work, ["-w", "1"])
    result = outcome(work)
    reasons = Counter((row[3], row[4]) for row in result.table)
    # Not vacuous: events time out mid-stream, others are released late, some at the end.
    assert reasons["lookup_miss", "timeout"] > 100, reasons
    assert reasons["late_enriched", None] > 100, reasons
    assert reasons["lookup_miss", "end_of_input"] > 0, reasons
    return result


def test_killed_three_times_the_table_is_the_uninterrupted_one(
    uninterrupted: Outcome, tmp_path: Path
) -> None:
    """Statuses, miss reasons and versions included; waits and arrival numbers aside."""
    args = init_recovery(tmp_path)
    for number, rows in enumerate((2_000, 7_000, 12_000)):
        log = f"crash{number}.log"
        proc = start_flow(tmp_path, args, env(tmp_path, demo_rate=5_000), log)
        seen = kill_when(proc, tmp_path / "enriched.sqlite", rows, tmp_path, log)
        assert seen < EVENTS * 0.9, f"killed too late ({seen} rows)"
    run(tmp_path, args)
    epochs = resume_epochs(tmp_path / "recovery")
    assert len(epochs) == 4 and epochs == sorted(epochs), epochs
    assert_same_outcome(outcome(tmp_path), uninterrupted)
    # The inspector shows each event-clock lookup's watermark: the last quote's time here.
    report = build_report(read_store(tmp_path / "recovery"))
    watermarks = {each.lookup: each.watermark for each in report.enrichment.lookups}
    last_quote = slot_time(EVENTS - 1)
    assert watermarks["security"] == pytest.approx(last_quote, abs=0.01), watermarks
    assert "lookup 'security' times out on the event clock: watermark" in as_text(report)


def test_a_paced_run_matches_an_unpaced_one(uninterrupted: Outcome, tmp_path: Path) -> None:
    """Speed changes nothing on the event clock: a run at 10,000 events/s, which takes
    two seconds, leaves the table of one that takes a fraction of that."""
    run(tmp_path, [], demo_rate=10_000)
    assert_same_outcome(outcome(tmp_path), uninterrupted)


def test_the_processing_clock_depends_on_the_run(tmp_path: Path) -> None:
    """Why the demo runs on event time: on the processing clock the same plan, read at two
    speeds, times out different events (the fast run, whose 20,000 quotes take about a
    second, times out none mid-stream; the paced one does)."""
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    fast.mkdir()
    slow.mkdir()
    run(fast, [], timeout_clock="processing")
    run(slow, [], timeout_clock="processing", demo_rate=5_000)
    timeouts = [
        sum(1 for row in outcome(work).table if row[4] == "timeout") for work in (fast, slow)
    ]
    assert timeouts[0] < timeouts[1], timeouts


def test_a_resume_on_the_other_clock_is_refused_while_events_wait(tmp_path: Path) -> None:
    """Waiting events' deadlines and segments are in their clock's time: on the processing
    clock, event-time deadlines of 2023 would all be past at once. Refused (exit 2) naming
    the setting; the same store resumes on its own clock."""
    args = init_recovery(tmp_path)
    proc = start_flow(tmp_path, args, env(tmp_path, demo_rate=5_000), "crash.log")
    kill_when(proc, tmp_path / "enriched.sqlite", 3_000, tmp_path, "crash.log")
    assert resume_point(tmp_path / "recovery").pending, "the kill left no waiting event"
    refused = start_flow(tmp_path, args, env(tmp_path, timeout_clock="processing"), "other.log")
    assert refused.wait(timeout=120) == 2
    message = (tmp_path / "other.log").read_text()
    assert "ENRICH_TIMEOUT_CLOCK" in message and "on the event clock" in message, message
    run(tmp_path, args)


AS_OF = [
    DEMO_LOOKUPS[0].model_copy(
        update={"mode": "as_of", "valid_from": "field", "valid_from_field": "valid_from"}
    ),
    *DEMO_LOOKUPS[1:],
]
"""The demo's chain with the securities joined as of each quote's time."""


def test_an_as_of_lookup_killed_twice_gives_the_uninterrupted_table(tmp_path: Path) -> None:
    """The histories are rebuilt from the source on every start, waiting events' times come
    from the snapshot: versions (the sector change) and statuses as in one run."""
    whole = tmp_path / "whole"
    whole.mkdir()
    run(whole, [], lookups=AS_OF)
    expected = outcome(whole)
    versions = Counter(row[5] for row in expected.table if row[3] != "lookup_miss")  # ref_version
    assert versions[1] and versions[2], versions  # both versions of updated rows are joined
    args = init_recovery(tmp_path)
    for number, rows in enumerate((3_000, 9_000)):
        log = f"crash{number}.log"
        proc = start_flow(tmp_path, args, env(tmp_path, demo_rate=5_000, lookups=AS_OF), log)
        kill_when(proc, tmp_path / "enriched.sqlite", rows, tmp_path, log)
    run(tmp_path, args, lookups=AS_OF)
    assert_same_outcome(outcome(tmp_path), expected)
