"""Dead letters as JSON lines, written through Bytewax's `FileSink`.

`FileSink` truncates to its snapshot offset on resume, so a crash never leaves
a duplicate line. The original payload is kept byte for byte: as text when it
is UTF-8, as base64 otherwise.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

from bytewax.connectors.files import FileSink

from operators.records import DeadLetter


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


def dead_letter_file(path: Path) -> FileSink:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return FileSink(path)
