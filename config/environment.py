"""Which `ENRICH_*` variables the project's programs read, so that a mistyped one stops start-up.

One ConfigMap serves every program, so a variable is known when any program
reads it: the dataflow, the reference publisher, the demo loaders and the
table command. The set is derived from the settings classes themselves (each
field under its class's prefix, inherited fields included), so a setting
added to any of them is known at once. Which classes are the programs' is
not decided here, on the ground floor, but by the caller: the floor that
knows every program (`dataflows.settings.PROGRAM_SETTINGS`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

from dotenv import dotenv_values
from pydantic_settings import BaseSettings

from config.base import ENV_PREFIX, SettingsError
from operators.identifiers import nearest

ENV_FILE = f"{ENV_PREFIX}ENV_FILE"
"""Read by `load_settings` itself: the optional dotenv file."""

_SERVICE_LINK = re.compile(
    r"ENRICH(_\w+?)?_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)"
)
_SERVICE_LINK_VALUE = re.compile(r"(tcp|udp|sctp)(://[0-9A-Fa-f.:\[\]]+:\d+)?|[0-9A-Fa-f.:]+")


def _service_link(name: str, value: str) -> bool:
    """Kubernetes adds `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT...` for every Service of the
    namespace unless a pod turns service links off; a Service named `enrich...` must not
    stop start-up. The value must look like one too (an address, a port or a protocol)."""
    return bool(_SERVICE_LINK.fullmatch(name.upper()) and _SERVICE_LINK_VALUE.fullmatch(value))


@cache
def known_variables(programs: tuple[type[BaseSettings], ...]) -> frozenset[str]:
    """Every `ENRICH_*` variable one of `programs` reads, upper case (pydantic-settings
    ignores case)."""
    names = {ENV_FILE}
    for cls in programs:
        prefix = str(cls.model_config.get("env_prefix", "")).upper()
        names.update(f"{prefix}{field.upper()}" for field in cls.model_fields)
    return frozenset(names)


def _unknown(name: str, where: str, known: frozenset[str]) -> str:
    close = nearest(name.upper().removeprefix(ENV_PREFIX), [k[len(ENV_PREFIX) :] for k in known])
    hint = f"; did you mean {ENV_PREFIX}{close}?" if close else ""
    return f"  {name}{where}: no program of this project reads this variable{hint}"


def _env_file_keys(env_file: str) -> list[str]:
    path = Path(env_file)
    if not path.is_file():
        raise SettingsError(
            f"invalid settings:\n  {ENV_FILE}: {env_file!r} is not a file; "
            "fix the path, or unset it to read the environment only"
        )
    try:
        return list(dotenv_values(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(
            f"invalid settings:\n  {ENV_FILE}: {env_file!r} cannot be read ({exc})"
        ) from None


def check_environment(
    environ: Mapping[str, str], programs: Sequence[type[BaseSettings]]
) -> str | None:
    """The env file to read, or SettingsError naming a missing env file or every unknown variable.

    Values are never shown: some are secrets.
    """
    env_file = environ.get(ENV_FILE) or None
    file_keys = _env_file_keys(env_file) if env_file is not None else []
    known = known_variables(tuple(dict.fromkeys(programs)))
    from_environ = [name for name in environ if not _service_link(name, environ[name])]
    lines = [
        _unknown(name, where, known)
        for names, where in ((from_environ, ""), (file_keys, f" (in {ENV_FILE} {env_file})"))
        for name in sorted(names)
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in known
    ]
    if lines:
        raise SettingsError("invalid settings:\n" + "\n".join(lines))
    return env_file
