"""The publisher's durable state: how far the table has been published, and under which settings.

It is JSON (never pickle), replaced atomically: written to a temporary file
in the same directory, fsynced, renamed over the old one, and the directory
fsynced, so a crash leaves either the old state or the new one, never a torn
file. The caller saves only what the producer has confirmed.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

Watermark = int | float | str | datetime
"""A change column value, as the database returned it; bound back as it was."""

_FORMAT = 1


class StateError(ValueError):
    """The state file cannot be read; a full load (`--full`) starts over without it."""


@dataclass(frozen=True)
class PublishState:
    """`watermark` is the greatest change value whose rows are all delivered.

    `scope` is what it vouches for (table, columns, filter, topic ...): under
    other settings the rows behind it were published differently, so a
    different scope calls for a full load.
    """

    watermark: Watermark | None
    scope: dict[str, Any]


def _encode(value: Watermark | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return {"type": "datetime", "value": value.isoformat()}
    return {"type": type(value).__name__, "value": value}


def _decode(data: dict[str, Any] | None) -> Watermark | None:
    if data is None:
        return None
    kind, value = data["type"], data["value"]
    if kind == "datetime":
        return datetime.fromisoformat(value)
    expected = {"int": int, "float": float, "str": str}[kind]
    if type(value) is not expected:
        raise ValueError(f"watermark {value!r} is not of type {kind}")
    return cast("int | float | str", value)  # checked just above


@dataclass(frozen=True)
class StateFile:
    path: Path

    def load(self) -> PublishState | None:
        """The saved state, or None before the first load finished."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
            if data["format"] != _FORMAT:
                raise ValueError(f"format {data['format']!r}, expected {_FORMAT}")
            return PublishState(_decode(data["watermark"]), data["scope"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(
                f"{self.path} is not a publisher state file ({exc}); "
                "run with --full to publish everything and write a new one"
            ) from None

    def save(self, state: PublishState) -> None:
        document = {
            "format": _FORMAT,
            "watermark": _encode(state.watermark),
            "scope": state.scope,
            "saved_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(document, file, indent=2)
                file.write("\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
