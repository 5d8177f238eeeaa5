"""What `python -m bytewax.run` was asked to do, as far as the dataflow needs it.

Bytewax gives the dataflow module nothing of its run arguments, yet two things
depend on its recovery directory: the store must be checked before Bytewax
opens (and unpickles) it, and what an operator should do after a failure
differs with one (a restart resumes from the last snapshot) and without one
(a restart starts afresh). This is the one place that reads it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

RECOVERY_ENV = "BYTEWAX_RECOVERY_DIRECTORY"
BYTEWAX_RUN = "bytewax.run"


def run_by_bytewax() -> bool:
    """Whether this process is `python -m bytewax.run` (not a test or a tool importing us)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and spec.name == BYTEWAX_RUN


def recovery_directory(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The recovery directory bytewax.run got (`-r` or its variable), or None.

    Without `argv`, the process's own arguments, and only when bytewax.run is
    the program: anything else that imports the dataflow runs without recovery.
    Parsed the way bytewax.run parses it (its option and its variable),
    leaving every other argument to bytewax.run.
    """
    if argv is None:
        if not run_by_bytewax():
            return None
        argv = sys.argv[1:]
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("-r", "--recovery-directory", default=environ.get(RECOVERY_ENV))
    known, _ = parser.parse_known_args(list(argv))
    return Path(known.recovery_directory) if known.recovery_directory else None


def recovery_enabled(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> bool | None:
    """Whether bytewax.run got a recovery directory; None when bytewax.run is not the program."""
    if argv is None and not run_by_bytewax():
        return None
    return recovery_directory(argv, environ) is not None
