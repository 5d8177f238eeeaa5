"""How every program reads `ENRICH_*` variables, and how a bad one stops it.

An optional dotenv file named by `ENRICH_ENV_FILE` is read first; real
environment variables override it. A bad value stops start-up with a message
that names the environment variable, not a Python field name.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

ENV_PREFIX = "ENRICH_"
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}", re.ASCII)


class SettingsError(ValueError):
    """Start-up refused because of a bad setting; the message names it."""


def check_topic(value: str | None) -> str | None:
    """A topic name Kafka accepts, or None; shared by every program that names topics."""
    if value is not None and not _TOPIC.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a legal Kafka topic name "
            "(letters, digits, '.', '_', '-'; at most 249 characters)"
        )
    return value


class EnrichSettings(BaseSettings):
    """Every program of the product reads `ENRICH_*` variables the same way."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)


def _named(loc: tuple[Any, ...], message: str) -> str:
    """`ENV_VAR: message`, with the place inside a JSON setting (`[0].key_field`) when
    there is one; a check across fields starts its message with the field's name."""
    if loc:
        inside = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:])
        where = f"{inside.removeprefix('.')}: " if inside else ""
        return f"{ENV_PREFIX}{str(loc[0]).upper()}: {where}{message}"
    field, _, rest = message.partition(":")
    return f"{ENV_PREFIX}{field.strip().upper()}: {rest.strip()}"


_SOURCE_FIELD = re.compile(r'field "(?P<field>\w+)" from source "(?P<source>\w+)"')


def _unparsable(exc: SourceError, env_file: str | None) -> SettingsError:
    """pydantic-settings refuses a JSON setting before validation; name it, never its value
    (ENRICH_KAFKA_CONFIG holds secrets), and say where in the text the JSON broke."""
    found = _SOURCE_FIELD.search(str(exc))
    name = f"{ENV_PREFIX}{found['field'].upper()}" if found else "a JSON setting"
    where = (
        f" (in {ENV_PREFIX}ENV_FILE {env_file})" if found and "DotEnv" in found["source"] else ""
    )
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):
        why = f"{cause.msg} at line {cause.lineno}, column {cause.colno}"
    else:
        why = type(cause).__name__ if cause is not None else "cannot be read"
    return SettingsError(f"invalid settings:\n  {name}{where}: not valid JSON ({why})")


S = TypeVar("S", bound=EnrichSettings)


def load_settings(
    cls: type[S], programs: Sequence[type[EnrichSettings]] = (), **overrides: Any
) -> S:
    """Read settings, or raise SettingsError naming every bad variable.

    Refused first: an ENRICH_ENV_FILE that is not there, and an ENRICH_* variable that none
    of `programs` (and `cls`) reads: a typo would otherwise leave its setting at the default.
    One ConfigMap serves every program, so the caller names them all; the project's list is
    `dataflows.settings.PROGRAM_SETTINGS`, on the floor that knows every program.
    """
    from config.environment import check_environment

    env_file = check_environment(os.environ, (cls, *programs))
    try:
        return cls(_env_file=env_file, **overrides)
    except SourceError as exc:
        raise _unparsable(exc, env_file) from None
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {_named(err['loc'], message)}")
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None


@contextmanager
def exit_on_bad_settings() -> Iterator[None]:
    """Every program's start-up: a bad setting prints its message and exits 2, no traceback."""
    try:
        yield
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
