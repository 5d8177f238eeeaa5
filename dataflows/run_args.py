"""What `python -m bytewax.run` was asked to do, as far as the dataflow's messages need it.

Bytewax does not tell a dataflow whether it runs with a recovery store, yet
what an operator should do after a failure depends on it: with one, a
restart resumes from the last snapshot; without one, it starts afresh.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

RECOVERY_ENV = "BYTEWAX_RECOVERY_DIRECTORY"


def recovery_enabled(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> bool | None:
    """Whether bytewax.run got a recovery directory (`-r` or its variable); None if not run by it.

    Parsed the way bytewax.run parses it (its option and variable), leaving
    every other argument to bytewax.run.
    """
    if argv is None:
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is None or spec.name != "bytewax.run":
            return None
        argv = sys.argv[1:]
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-r", "--recovery-directory", default=environ.get(RECOVERY_ENV))
    known, _ = parser.parse_known_args(list(argv))
    return bool(known.recovery_directory)
