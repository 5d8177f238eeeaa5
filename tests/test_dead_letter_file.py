"""The dead-letter file is append-only: no run cuts it below what it held when the run began.

A resume still cuts back what its crashed execution wrote after the last
snapshot (the resume writes it again), so no line is duplicated; the crash
test in tests/test_sink_crash.py checks that through a real kill.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, run_main

from dataflows.flow import build_flow
from dataflows.settings import Settings, load_settings
from sinks.dead_letter import AppendFileSink

DEMO = {"demo_events": 2_000, "demo_references": 200, "miss_timeout_seconds": 3_600.0}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("ENRICH_", "BYTEWAX_")):
            monkeypatch.delenv(name)
    yield


def settings(work: Path) -> Settings:
    return load_settings(
        **DEMO,
        sqlite_path=work / "enriched.sqlite",
        dead_letter_path=work / "dead_letters.jsonl",
        progress_seconds=0,
    )


def rows(db: Path) -> int:
    with closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM enriched_events").fetchone()[0])


def test_a_fresh_run_appends_to_the_dead_letters_of_an_earlier_run(tmp_path: Path) -> None:
    config = settings(tmp_path)
    run_main(build_flow(config))
    first = config.dead_letter_path.read_bytes()
    stored = rows(config.sqlite_path)
    assert first.count(b"\n") > 0, "the demo run wrote no dead letters to compare"

    with closing(sqlite3.connect(config.sqlite_path)) as conn, conn:
        conn.execute(
            "INSERT INTO enriched_events "
            "(event_id, lookup_id, status, waited_ms, arrival_seq, stages) "
            "VALUES ('from an earlier run', 'X', 'enriched', 0, 0, '[]')"
        )

    run_main(build_flow(config))
    second = config.dead_letter_path.read_bytes()
    assert second.startswith(first)
    assert second.count(b"\n") == 2 * first.count(b"\n")
    # The enriched table is upserted into, never emptied: a row no run wrote again stays.
    assert rows(config.sqlite_path) == stored + 1


def test_a_fresh_recovery_run_keeps_earlier_lines_and_its_resume_adds_none(
    tmp_path: Path,
) -> None:
    config = settings(tmp_path)
    run_main(build_flow(config))
    before = config.dead_letter_path.read_bytes()

    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    recovered = {
        "epoch_interval": timedelta(seconds=0.1),
        "recovery_config": RecoveryConfig(str(recovery)),
    }
    run_main(build_flow(config), **recovered)  # type: ignore[arg-type]
    after_fresh = config.dead_letter_path.read_bytes()
    assert after_fresh.startswith(before)
    assert after_fresh.count(b"\n") == 2 * before.count(b"\n")

    # Resuming the finished run truncates to its last snapshot: the file as it ended.
    run_main(build_flow(config), **recovered)  # type: ignore[arg-type]
    assert config.dead_letter_path.read_bytes() == after_fresh


def partition(path: Path, resume_state: int | None) -> object:
    sink = AppendFileSink(path)
    [name] = sink.list_parts()
    return sink.build_part("dead_letter_out", name, resume_state)


def test_a_resume_cuts_back_only_what_was_written_after_its_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "dead_letters.jsonl"
    path.write_bytes(b'{"earlier":1}\n')
    part = partition(path, None)
    part.write_batch(['{"a":1}'])  # type: ignore[attr-defined]
    snapshot = part.snapshot()  # type: ignore[attr-defined]
    part.write_batch(['{"after_snapshot":1}'])  # type: ignore[attr-defined]
    part.close()  # type: ignore[attr-defined]
    assert snapshot == len(b'{"earlier":1}\n{"a":1}\n')

    resumed = partition(path, snapshot)
    assert resumed.snapshot() == snapshot  # type: ignore[attr-defined]
    resumed.write_batch(['{"after_snapshot":1}'])  # type: ignore[attr-defined]
    resumed.close()  # type: ignore[attr-defined]
    assert path.read_bytes() == b'{"earlier":1}\n{"a":1}\n{"after_snapshot":1}\n'


def test_a_file_shorter_than_its_snapshot_is_appended_to_not_padded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "dead_letters.jsonl"
    path.write_bytes(b'{"kept":1}\n')
    with caplog.at_level(logging.WARNING, "enrich.dead_letters"):
        part = partition(path, 1_000)
    part.write_batch(['{"new":1}'])  # type: ignore[attr-defined]
    part.close()  # type: ignore[attr-defined]
    assert path.read_bytes() == b'{"kept":1}\n{"new":1}\n'
    assert "less than the 1000 its last snapshot recorded" in caplog.text
    assert str(path) in caplog.text


def test_a_line_cut_short_by_a_crash_does_not_swallow_the_next(tmp_path: Path) -> None:
    path = tmp_path / "dead_letters.jsonl"
    path.write_bytes(b'{"whole":1}\n{"cut sh')
    part = partition(path, None)
    part.write_batch(['{"next":1}'])  # type: ignore[attr-defined]
    part.close()  # type: ignore[attr-defined]
    assert path.read_bytes().splitlines()[-1] == b'{"next":1}'


def test_a_run_without_dead_letters_still_leaves_the_file(tmp_path: Path) -> None:
    config = load_settings(
        sqlite_path=tmp_path / "enriched.sqlite",
        dead_letter_path=tmp_path / "out" / "dead_letters.jsonl",
    )
    run_main(build_flow(config, {"input": TestingSource([])}))
    assert config.dead_letter_path.read_bytes() == b""
