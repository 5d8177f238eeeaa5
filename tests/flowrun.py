"""Running the real entry point as a subprocess, and reading what its recovery store will resume.

Shared by the tests that crash, resume, tail or inspect a live dataflow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from operators.enrichment import Pending
from operators.parking import waiting_in
from recovery_store import resume
from recovery_store.store import read_store
from recovery_store.unpickle import loads

ROOT = Path(__file__).resolve().parents[1]
ENRICH_STEP_PREFIXES = ("enrich.enrich_", "enrich.park_")
"""Each lookup's join is `enrich_<lookup name>`, the segments of its misses `park_<lookup name>`."""
INPUT_STEP = "enrich.input"


def flow_env(work: Path, **settings: object) -> dict[str, str]:
    """An environment naming only this run's files, so runs never share output.

    A setting given as None is left unset, so its default applies; lists and
    dicts (of models too) are given as JSON, as an operator would.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENRICH_", "BYTEWAX_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        ENRICH_SQLITE_PATH=str(work / "enriched.sqlite"),
        ENRICH_DEAD_LETTER_PATH=str(work / "dead_letters.jsonl"),
        ENRICH_PROGRESS_SECONDS="0",
        ENRICH_LOG_LEVEL="WARNING",
    )
    env.update(
        {
            f"ENRICH_{name.upper()}": _env_value(value)
            for name, value in settings.items()
            if value is not None
        }
    )
    return env


def _env_value(value: object) -> str:
    if isinstance(value, list | dict):
        return TypeAdapter(type(value)).dump_json(value).decode()
    return str(value)


@dataclass(frozen=True)
class ResumePoint:
    """Where the next execution will resume: its epoch and the snapshots it will load."""

    epoch: int
    offsets: dict[str, int]
    pending_by_lookup: dict[str, list[Pending]]

    @property
    def pending(self) -> list[Pending]:
        return [waiting for queue in self.pending_by_lookup.values() for waiting in queue]


def start_flow(
    work: Path,
    args: Sequence[str],
    env: dict[str, str],
    log: str,
    entry: str = "dataflows.enrich",
) -> subprocess.Popen[bytes]:
    """Start the dataflow in its own session, so one signal reaches its whole group.

    `entry` is what `bytewax.run` imports: a module, or a file relative to the root.
    """
    with open(work / log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", entry, *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL, as a crash would: no atexit, no flush, no clean shutdown."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def tail(work: Path, log: str) -> str:
    return (work / log).read_text(errors="replace")[-3_000:]


def resume_point(recovery: Path) -> ResumePoint:
    """Read the resume epoch and the snapshots the next execution will load.

    The rule is `recovery_store.resume`'s (Bytewax 0.21's own: the smallest
    worker frontier of the last execution, and each state key's newest
    snapshot before it), over every partition. The next run records the
    epoch it actually used in `exs`, which the tests check against this one.
    """
    store = read_store(recovery)
    point = resume.resume_point(store)
    offsets: dict[str, int] = {}
    pending: dict[str, list[Pending]] = {}
    for snap in resume.resume_snapshots(store, point):
        state: Any = None if snap.data is None else loads(snap.data)
        if snap.step_id == INPUT_STEP and state is not None:
            offsets[snap.state_key] = state
        elif snap.step_id.startswith(ENRICH_STEP_PREFIXES) and state:
            lookup = snap.step_id.split("_", 1)[1]
            pending.setdefault(lookup, []).extend(waiting_in(state))
    return ResumePoint(point.epoch, offsets, pending)


def steady_column(name: str) -> str:
    """A select expression for column `name` of the enriched table that leaves out
    wall-clock waits, also those inside each lookup's outcome in `stages`."""
    if name == "stages":
        return "(SELECT json_group_array(json_remove(value, '$.waited_ms')) FROM json_each(stages))"
    return f'"{name}"'


def init_recovery(work: Path) -> list[str]:
    recovery = work / "recovery"
    recovery.mkdir(mode=0o700)  # private whatever the umask: the dataflow refuses others
    subprocess.run(
        [sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], cwd=ROOT, check=True
    )
    # `-s` takes whole seconds; 0 snapshots every epoch, so a kill loses little.
    return ["-r", str(recovery), "-s", "0", "-b", "0"]
