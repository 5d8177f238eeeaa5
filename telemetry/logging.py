"""Levelled logs on stderr, as text for people or JSON lines for log collectors.

Secrets never reach the output: settings are logged only through
`public_settings`, which leaves out every field holding a secret, and every
finished line is scrubbed of the secret values themselves in case one slips
into a message, an extra field or an exception (a driver error quoting its
connection string, say).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, SecretBytes, SecretStr

from config.connections import LoggingSettings

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
REDACTED = "**********"
_HANDLER_NAME = "enrich"
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

log = logging.getLogger("enrich")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extra fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class _Redacting(logging.Formatter):
    """Formats with `inner`, then replaces each secret however it was written.

    A secret may appear as itself, inside a repr (an exception quoting a dict,
    say), and either of those escaped again inside a JSON string.
    """

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self._inner = inner
        quoted = {form for secret in secrets if secret for form in (secret, repr(secret)[1:-1])}
        spellings = quoted | {json.dumps(form)[1:-1] for form in quoted}
        self._spellings = sorted(spellings, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        line = self._inner.format(record)
        for spelling in self._spellings:
            line = line.replace(spelling, REDACTED)
        return line


def configure_logging(level: str, fmt: LogFormat, secrets: Iterable[str] = ()) -> None:
    """Send every logger's records at `level` and above to stderr; safe to call again."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(handler)
    inner = JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(_Redacting(inner, secrets))
    root.addHandler(handler)
    root.setLevel(level)


def _secrets_in(value: object) -> Iterator[SecretStr | SecretBytes]:
    if isinstance(value, SecretStr | SecretBytes):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secrets_in(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _secrets_in(item)


def _fields(settings: BaseModel) -> Iterator[tuple[str, Any]]:
    for name in type(settings).model_fields:
        yield name, getattr(settings, name)


def secret_values(settings: BaseModel) -> list[str]:
    """Every secret a settings object holds, however deep in a field."""
    return [
        secret.get_secret_value().decode(errors="replace")
        if isinstance(secret, SecretBytes)
        else secret.get_secret_value()
        for _, value in _fields(settings)
        for secret in _secrets_in(value)
    ]


def public_settings(settings: BaseModel) -> dict[str, Any]:
    """The fields holding no secret at all: what may be logged to say how the process runs."""
    return {
        name: value for name, value in _fields(settings) if next(_secrets_in(value), None) is None
    }


def start_logging(settings: LoggingSettings) -> None:
    """Configure logging from the `log_level` and `log_format` settings, then log the others."""
    configure_logging(settings.log_level, settings.log_format, secret_values(settings))
    public = public_settings(settings)
    pairs = " ".join(f"{name}={json.dumps(value, default=str)}" for name, value in public.items())
    log.info("starting with %s", pairs, extra={"settings": public})
