"""Dead letters as JSON lines, appended to a file that is never cut below what it held.

A fresh run (no recovery state) appends after what earlier runs wrote, so
their dead letters are kept. A resume cuts the file back to its snapshotted
length, which is never less than the file held when the run began, so the
epoch it replays leaves no duplicate line. The original payload is kept byte
for byte: as text when it is UTF-8, as base64 otherwise.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from operators.records import DeadLetter

log = logging.getLogger("enrich.dead_letters")


def _text(raw: bytes | None) -> tuple[str | None, str]:
    if raw is None:
        return None, "none"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def to_line(letter: DeadLetter) -> str:
    payload, payload_encoding = _text(letter.payload)
    key, key_encoding = _text(letter.key)
    return json.dumps(
        {
            "reason": letter.reason,
            "detail": letter.detail,
            "origin": letter.origin,
            "key": key,
            "key_encoding": key_encoding,
            "payload": payload,
            "payload_encoding": payload_encoding,
            "dead_lettered_at": datetime.now(UTC).isoformat(),
        },
        separators=(",", ":"),
    )


class _AppendPartition(StatefulSinkPartition[str, int]):
    """Appends lines; its state is the file's length in bytes after the last batch."""

    def __init__(self, path: Path, resume_length: int | None) -> None:
        self._file = path.open("ab")
        length = self._file.seek(0, os.SEEK_END)
        if resume_length is not None and resume_length <= length:
            # What the crashed execution wrote after its last snapshot; the resume writes it again.
            self._file.truncate(resume_length)
            self._file.seek(resume_length)
        elif resume_length is not None:
            log.warning(
                "dead-letter file %s holds %d bytes, less than the %d its last snapshot "
                "recorded: it was cut or replaced since; appending, so lines written after "
                "that snapshot may repeat",
                path,
                length,
                resume_length,
            )
        if self._file.tell() > 0 and _last_byte(path, self._file.tell()) != b"\n":
            # An earlier run died mid-line: start ours on a line of its own.
            self._write(b"\n")

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())

    def write_batch(self, values: list[str]) -> None:
        self._write("".join(f"{value}\n" for value in values).encode("utf-8"))

    def snapshot(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


def _last_byte(path: Path, length: int) -> bytes:
    with path.open("rb") as file:
        file.seek(length - 1)
        return file.read(1)


class AppendFileSink(FixedPartitionedSink[str, int]):
    """One JSON-lines file, appended to, never truncated below its length at the run's start.

    Unlike Bytewax's `FileSink`, which cuts the file to zero when there is no
    recovery state, so a fresh run would erase every earlier run's dead
    letters. Items are `(key, line)`; the key is ignored. Its one partition
    is named after the path, as `FileSink`'s is, so recovery stores written
    before keep resuming.
    """

    def __init__(self, path: Path) -> None:
        self._path = path

    def list_parts(self) -> list[str]:
        return [str(self._path)]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _AppendPartition:
        return _AppendPartition(self._path, resume_state)


def dead_letter_file(path: Path) -> AppendFileSink:
    """The sink, and the file at once: Bytewax builds a partition only when it gets a line,
    yet a run without dead letters should still leave the (possibly empty) file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return AppendFileSink(path)
