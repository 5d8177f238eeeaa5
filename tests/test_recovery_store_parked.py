"""The inspector and the recovery guard on stores whose waiting events are parked (issue 14).

Each lookup has a join `enrich_<lookup>` keyed by shard (held events and the
book) and segments `park_<lookup>` keyed `<shard>/<second>` (parked events).
A hand-built store gives exact numbers, with a lookup written by an earlier
version beside it (waiting events in the join's keys); a store of a real run,
killed during a miss storm, is checked against a count read from it
independently, through the report and the resume check alike.
"""

from __future__ import annotations

import pickle
import sqlite3
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from test_recovery_store import insert, main_json, new_store, pick, run_main, snap, waiting
from test_storm_recovery import kill_when_waiting

from config.lookups import DEMO_LOOKUPS, Lookup
from dataflows import recovery_guard
from dataflows.flow import build_flow
from dataflows.settings import load_settings
from operators import routing
from operators import waiting as compact
from operators.enrichment import HELD, Pending
from recovery_store.layout import waiting_events
from recovery_store.report import build_key_report, build_report
from recovery_store.store import read_store

JOIN, PARK, OLD = "enrich.enrich_security", "enrich.park_security", "enrich.enrich_exchange"


def blob(pending: Pending) -> bytes:
    return compact.encode(pending.event, pending.arrived, pending.deadline)


def join_state(held: list[Pending], book: dict[str, dict[int, int]]) -> Any:
    """A join's snapshot as `ParkingJoin.snapshot` makes it: held events, book, segment totals."""
    totals: dict[int, list[int]] = {}
    for counts in book.values():
        for segment, count in counts.items():
            totals.setdefault(segment, [0, 0])[0] += count
    return [blob(each) for each in held], book, totals


A1, A2, B1 = waiting("A", "a1", 1000.0), waiting("A", "a2", 1001.2), waiting("B", "b1", 1000.5)
C1 = waiting("C", "c1", 998.0)
D1 = waiting("D", "d1", 1003.0)._replace(deadline=HELD)
# An earlier version's exchange lookup: its waiting events in the join, as `Pending` or bytes.
X1, X2, A9 = waiting("XNYS", "x1", 997.0), waiting("XNAS", "x2", 1002.0), waiting("A", "x3", 1004.0)
NEWER = waiting("A", "a3", 1005.0)


@pytest.fixture
def parked(tmp_path: Path) -> Path:
    """One execution, resume at epoch 5; shard 00 of security has two segments, 02 one."""
    directory = new_store(tmp_path / "recovery", 1)
    insert(directory, 0, "exs", (0, 1, 1))
    insert(directory, 0, "fronts", (0, 0, 5))
    insert(
        directory,
        0,
        "snaps",
        snap(JOIN, "00", 4, join_state([D1], {"A": {1000: 1, 1001: 1}, "B": {1000: 1}})),
        snap(JOIN, "01", 2, join_state([], {})),
        snap(JOIN, "02", 3, join_state([], {"C": {998: 1}})),
        snap(PARK, "00/1000", 2, [blob(A1), blob(B1)]),
        snap(PARK, "00/1001", 3, [blob(A2)]),
        snap(PARK, "02/998", 1, [blob(C1)]),
        (PARK, "01/997", 4, None),  # emptied and discarded: nothing to load
        snap(PARK, "00/1005", 6, [blob(NEWER)]),  # after the resume epoch: not loaded
        snap(OLD, "00", 3, [X1, A9]),
        snap(OLD, "01", 3, [blob(X2)]),
    )
    return directory


def test_each_lookup_counts_its_shards_segments_and_every_waiting_event(
    parked: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    enrichment = main_json(capsys, parked)["enrichment"]
    assert enrichment["step_ids"] == [OLD, JOIN, PARK]
    # Segments are no shards: 2 + 3 join keys, 2 + 2 of them with waiting events.
    assert (enrichment["shards_held"], enrichment["shards_with_pending"]) == (5, 4)
    fields = ("lookup", "shards", "shards_with_pending", "segments", "events_pending",
              "events_held", "lookup_ids_pending", "oldest_arrival", "earliest_deadline",
              "latest_deadline")  # fmt: skip
    assert pick(enrichment["lookups"], *fields) == [
        ("exchange", 2, 2, 0, 3, 0, 3, X1.arrived, X1.deadline, A9.deadline),
        ("security", 3, 2, 3, 5, 1, 4, C1.arrived, C1.deadline, A2.deadline),
    ]
    totals = ("shards_held", "shards_with_pending", "segments", "events_pending",
              "events_held", "lookup_ids_pending", "oldest_arrival", "earliest_deadline",
              "latest_deadline")  # fmt: skip
    assert pick([enrichment], *totals) == [(5, 4, 3, 8, 1, 7, X1.arrived, X1.deadline, A9.deadline)]


def test_the_most_pending_name_the_lookup_and_the_join_shard_not_the_segment(
    parked: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Lookup id A waits in both lookups: two entries, not one with three events."""
    most = main_json(capsys, parked, "--top", "3")["enrichment"]["most_pending"]
    assert most == [
        {"lookup": "security", "lookup_id": "A", "shard": "00", "events": 2, "segments": 2,
         "earliest_deadline": A1.deadline},
        {"lookup": "exchange", "lookup_id": "A", "shard": "00", "events": 1, "segments": 0,
         "earliest_deadline": A9.deadline},
        {"lookup": "security", "lookup_id": "B", "shard": "00", "events": 1, "segments": 1,
         "earliest_deadline": B1.deadline},
    ]  # fmt: skip


def test_key_says_which_lookup_shard_and_segment_each_event_waits_in(
    parked: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    detail = main_json(capsys, parked, "--key", "A")
    assert pick(detail["pending"], "event_id", "shard") == [
        ("a1", "00"),
        ("a2", "00"),
        ("x3", "00"),
    ]
    assert pick(detail["pending"], "event_id", "lookup", "shard", "segment", "deadline") == [
        ("a1", "security", "00", "00/1000", A1.deadline),
        ("a2", "security", "00", "00/1001", A2.deadline),
        ("x3", "exchange", "00", None, A9.deadline),
    ]
    held = main_json(capsys, parked, "--key", "D")["pending"]
    assert pick(held, "lookup", "shard", "segment", "deadline") == [("security", "00", None, None)]

    code, text, _ = run_main(capsys, parked, "--key", "A")
    assert code == 0
    rows = [line.split()[:4] for line in text.splitlines() if line.startswith("  a")]
    assert rows == [["a1", "security", "00", "00/1000"], ["a2", "security", "00", "00/1001"]]


def test_the_text_report_counts_join_shards_and_segments_apart(
    parked: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, err = run_main(capsys, parked, "--top", "1")
    assert (code, err) == (0, "")
    lines = text.splitlines()
    assert "  shards held 5, with pending events 4; segments of parked events 3" in lines
    assert (
        "  events pending 8 for 7 lookup ids, 1 of them held until the reference source "
        "has caught up" in lines
    )
    table = lines.index(
        "pending events by lookup: held in the join's shards, parked in its segments"
    )
    assert lines[table + 1].split()[:7] == ["lookup", "shards", "with", "pending", "segments",
                                            "pending", "held"]  # fmt: skip
    assert lines[table + 2].split()[:7] == ["exchange", "2", "2", "0", "3", "0", "3"]
    assert lines[table + 3].split()[:7] == ["security", "3", "2", "3", "5", "1", "4"]
    top = lines[lines.index("lookup ids with the most pending events") + 2]
    assert top.split()[:5] == ["security", "A", "00", "2", "2"]


def test_events_in_the_segments_are_decoded_by_the_restricted_loader(
    parked: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A parked event whose inner pickle names a global is refused, never called."""
    times = blob(A1)[:16]
    insert(parked, 0, "snaps", snap(PARK, "02/999", 4, [times + pickle.dumps(breakpoint)]))
    code, out, err = run_main(capsys, parked)
    assert (code, out) == (2, "")
    assert "'enrich.park_security' key '02/999' epoch 4" in err
    assert "a waiting event never names a global (builtins.breakpoint)" in err


# A real store: a miss storm killed with recovery on (`test_storm_recovery`).


@pytest.fixture(scope="module")
def storm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("storm")
    kill_when_waiting(work, "crash.log")
    return work


def stored_counts(recovery: Path) -> dict[str, Counter[str]]:
    """Per step of the resume, its keys and waiting events, read with plain pickle here.

    The resume loads each key's newest snapshot before the slowest worker's frontier.
    """
    with closing(sqlite3.connect(f"file:{recovery / 'part-0.sqlite3'}?mode=ro", uri=True)) as db:
        (frontier,) = db.execute("SELECT MIN(worker_frontier) FROM fronts").fetchone()
        rows = db.execute(
            "SELECT step_id, state_key, ser_change FROM snaps s WHERE snap_epoch = "
            "(SELECT MAX(snap_epoch) FROM snaps t WHERE t.step_id = s.step_id AND "
            "t.state_key = s.state_key AND t.snap_epoch < ?)",
            (frontier,),
        ).fetchall()
    counts: dict[str, Counter[str]] = {}
    for step_id, _, data in rows:
        if data is None or not step_id.startswith(("enrich.enrich_", "enrich.park_")):
            continue
        state = pickle.loads(data)
        events = state[0] if isinstance(state, tuple) else state
        step = counts.setdefault(step_id, Counter())
        step["keys"] += 1
        step["events"] += len(events)
    return counts


def test_a_killed_storm_is_reported_as_the_store_holds_it(storm: Path) -> None:
    recovery = storm / "recovery"
    counts = stored_counts(recovery)
    assert counts[PARK]["keys"] >= 2 and counts[PARK]["events"] > 0, counts
    report = build_report(read_store(recovery), top=5)
    assert report.enrichment.shards_held == counts[JOIN]["keys"] + counts[OLD]["keys"]
    by_lookup = {each.lookup: each for each in report.enrichment.lookups}
    security = by_lookup["security"]
    assert (security.shards, security.segments) == (counts[JOIN]["keys"], counts[PARK]["keys"])
    assert security.events_pending == counts[JOIN]["events"] + counts[PARK]["events"]
    assert report.enrichment.segments == counts[PARK]["keys"]

    shards = set(routing.names(load_settings().shards))
    assert security.shards_with_pending <= len(shards)
    top = report.enrichment.most_pending[0]
    assert (top.lookup, top.shard in shards) == ("security", True)
    detail = build_key_report(read_store(recovery), top.lookup_id)
    assert len(detail.pending) == top.events
    assert {event.segment.split("/")[0] for event in detail.pending if event.segment} == {top.shard}


def test_removing_a_lookup_with_parked_events_is_refused_with_their_count(storm: Path) -> None:
    """Renaming the security lookup leaves its steps without a place in the new dataflow."""
    recovery = storm / "recovery"
    counts = stored_counts(recovery)
    store = read_store(recovery)
    assert waiting_events(store, PARK) == counts[PARK]["events"] > 0
    assert waiting_events(store, JOIN) == counts[JOIN]["events"]

    renamed = Lookup.model_validate({**DEMO_LOOKUPS[0].model_dump(), "name": "securities"})
    settings = load_settings(
        lookups=[renamed, *DEMO_LOOKUPS[1:]], dead_letter_path=storm / "dead_letters.jsonl"
    )
    flow = build_flow(settings, recovery=True)
    message = recovery_guard.problems(recovery, flow, routing.names(settings.shards))
    assert message is not None
    assert (
        f"step '{PARK}' is gone from this dataflow (a lookup removed?), and its state holds "
        f"{counts[PARK]['events']} waiting events that a resume would drop"
    ) in message

    kept = recovery_guard.problems(
        recovery, build_flow(load_settings(dead_letter_path=storm / "dead_letters.jsonl"),
                             recovery=True), routing.names(settings.shards)
    )  # fmt: skip
    assert kept is None
