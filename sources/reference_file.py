"""A lookup's reference rows from a JSON-lines file instead of a topic.

Each line mirrors a compacted-topic record: `{"key": <lookup id>, "value":
{<columns>}}`, with a null value for a delete. As with a reference topic, the
join keeps no rows in its snapshots, so every start re-reads the file from its
first line: lines before the snapshot are marked `replay`, and the end of the
file is announced with `CaughtUp`. A line's origin ends with its 0-based index
in the file, so the replay boundary compares as a Kafka offset does.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from operators.records import CaughtUp, Kind, RawRecord


def parse_line(line: bytes) -> tuple[bytes | None, bytes | None]:
    """The key and value bytes a topic would hold for one line.

    A line that is no such record comes back keyless with its own bytes as the
    value, so the decoder dead-letters it with what the file said. That takes
    in a line without a `value` member: only an explicit null deletes a row.
    """
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if isinstance(record, dict) and "value" in record:
        key, value = record.get("key"), record["value"]
        if (type(key) is str and key) or type(key) is int:
            compact = None if value is None else json.dumps(value, separators=(",", ":")).encode()
            return str(key).encode(), compact
    return None, line.rstrip(b"\r\n")


class _FilePartition(StatefulSourcePartition[RawRecord | CaughtUp, int]):
    """The file from its first line; the snapshot is how many lines were read.

    The snapshot never falls below `replay_below`, so a crash while re-reading
    keeps the boundary between replayed and new lines.
    """

    def __init__(self, path: Path, lookup: str, batch_size: int, replay_below: int) -> None:
        self._file = path.open("rb")
        self._origin = f"file/{path.name}"
        self._lookup = lookup
        self._batch_size = batch_size
        self._replay_below = replay_below
        self._read = 0
        self._caught_up: CaughtUp | None = CaughtUp(self._origin, 1, lookup)

    def next_batch(self) -> list[RawRecord | CaughtUp]:
        if self._caught_up is None:
            raise StopIteration
        lines = list(islice(self._file, self._batch_size))
        batch: list[RawRecord | CaughtUp] = []
        for index, line in enumerate(lines, self._read):
            if line.strip():
                key, value = parse_line(line)
                batch.append(
                    RawRecord(
                        Kind.REFERENCE,
                        key,
                        value,
                        f"{self._origin}/{index}",
                        index < self._replay_below,
                        self._lookup,
                    )
                )
        self._read += len(lines)
        if len(lines) < self._batch_size:
            batch.append(self._caught_up)
            self._caught_up = None
            self._file.close()
        return batch

    def snapshot(self) -> int:
        return max(self._read, self._replay_below)

    def close(self) -> None:
        self._file.close()


class ReferenceFileSource(FixedPartitionedSource[RawRecord | CaughtUp, int]):
    """A lookup's reference file as a source of one partition, named after the file.

    A missing file is refused here, when the dataflow is built, rather than
    when a worker first reads it.
    """

    def __init__(self, path: Path, lookup: str, batch_size: int) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"reference file of lookup {lookup!r} not found: {path}")
        if batch_size < 1:
            raise ValueError(f"a reference file needs batch_size >= 1, got {batch_size}")
        self._path = path
        self._lookup = lookup
        self._batch_size = batch_size

    def list_parts(self) -> list[str]:
        return [self._path.name]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _FilePartition:
        return _FilePartition(self._path, self._lookup, self._batch_size, resume_state or 0)
