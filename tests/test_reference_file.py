"""The reference file source on real files: alone, and run by Bytewax with recovery."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main

from operators.records import CaughtUp, Kind, RawRecord
from sources.reference_file import ReferenceFileSource

LOOKUP = "exchange"
GOOD = [
    b'{"key": "XNYS", "value": {"name": "New York Stock Exchange", "country": "US", "version": 1}}',
    b'{"key": 7, "value": {"name": "Z\\u00fcrich", "version": 2}}',
    b'{"key": "XNYS", "value": null}',
]
BAD = [
    b"not json",
    b"[1, 2]",
    b'{"key": null, "value": {"name": "x"}}',
    b'{"key": true, "value": {"name": "x"}}',
    b'{"key": "", "value": {"name": "x"}}',
    b'{"key": "XLON"}',
    b'{"key": "\xff", "value": {}}',
]


def write(tmp_path: Path, lines: list[bytes], name: str = "exchanges.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def record(path: Path, index: int, key: bytes | None, value: bytes | None) -> RawRecord:
    return RawRecord(Kind.REFERENCE, key, value, f"file/{path.name}/{index}", False, LOOKUP)


def drain(source: ReferenceFileSource, resume_state: int | None) -> list[RawRecord | CaughtUp]:
    part = source.build_part("refs", source.list_parts()[0], resume_state)
    out: list[RawRecord | CaughtUp] = []
    try:
        while True:
            out.extend(part.next_batch())
            assert part.snapshot() >= (resume_state or 0)
    except StopIteration:
        return out
    finally:
        part.close()


def run(source: ReferenceFileSource, recovery: Path | None = None) -> list[RawRecord | CaughtUp]:
    out: list[RawRecord | CaughtUp] = []
    flow = Dataflow("reference_file_test")
    op.output("out", op.input("in", flow, source), TestingSink(out))
    config = None if recovery is None else RecoveryConfig(str(recovery))
    run_main(flow, epoch_interval=timedelta(0), recovery_config=config)
    return out


def test_rows_and_deletes_in_file_order_then_caught_up_once(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    out = run(ReferenceFileSource(path, LOOKUP, batch_size=2))
    assert out == [
        record(
            path,
            0,
            b"XNYS",
            b'{"name":"New York Stock Exchange","country":"US","version":1}',
        ),
        record(path, 1, b"7", b'{"name":"Z\\u00fcrich","version":2}'),
        record(path, 2, b"XNYS", None),
        CaughtUp(f"file/{path.name}", 1, LOOKUP),
    ]
    assert json.loads(out[1].value or b"") == {"name": "Zürich", "version": 2}


def test_bad_lines_come_keyless_with_their_bytes_and_blank_lines_are_skipped(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, [*BAD, b"", b"  \r", GOOD[2] + b"\r"])
    *records, last = drain(ReferenceFileSource(path, LOOKUP, batch_size=3), None)
    assert records == [
        *(record(path, index, None, line) for index, line in enumerate(BAD)),
        record(path, len(BAD) + 2, b"XNYS", None),
    ]
    assert last == CaughtUp(f"file/{path.name}", 1, LOOKUP)


def test_an_empty_file_only_catches_up(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.touch()
    assert drain(ReferenceFileSource(path, LOOKUP, batch_size=4), None) == [
        CaughtUp("file/empty.jsonl", 1, LOOKUP)
    ]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 10])
def test_resume_marks_lines_before_the_snapshot_as_replay(tmp_path: Path, batch_size: int) -> None:
    path = write(tmp_path, [*GOOD, b"", *GOOD])
    source = ReferenceFileSource(path, LOOKUP, batch_size)
    fresh = drain(source, None)
    *rows, caught_up = drain(source, 4)
    assert [row.replay for row in rows] == [True, True, True, False, False, False]
    assert [row._replace(replay=False) for row in rows] + [caught_up] == fresh


def test_a_recovered_run_replays_the_file_and_reads_new_lines(tmp_path: Path) -> None:
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    path = write(tmp_path, GOOD)
    source = ReferenceFileSource(path, LOOKUP, batch_size=2)
    first = run(source, recovery)
    path.write_bytes(path.read_bytes() + BAD[0] + b"\n")
    second = run(source, recovery)
    assert second == [
        *(item._replace(replay=True) for item in first[:-1]),
        record(path, len(GOOD), None, BAD[0]),
        first[-1],
    ]


def test_a_missing_file_is_refused_naming_its_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.jsonl"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        ReferenceFileSource(path, LOOKUP, batch_size=10)
