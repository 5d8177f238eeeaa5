"""Importing the dataflow's module does nothing; Bytewax asking for `flow` builds it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import gc, logging, signal, sys, threading
before = (gc.get_threshold(), signal.getsignal(signal.SIGTERM), list(logging.getLogger().handlers))
import dataflows.enrich
after = (gc.get_threshold(), signal.getsignal(signal.SIGTERM), list(logging.getLogger().handlers))
assert before == after, (before, after)
assert threading.active_count() == 1, threading.enumerate()
assert "flow" not in vars(dataflows.enrich)
try:
    dataflows.enrich.settings
except AttributeError:
    pass
else:
    raise AssertionError("settings were loaded")
print("quiet")
"""


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENRICH_")}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_importing_the_dataflow_reads_no_settings_and_starts_nothing() -> None:
    # A setting no program reads would stop start-up with exit 2, were settings read.
    done = run(PROBE, ENRICH_NO_SUCH_SETTING="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "quiet"


def test_asking_for_flow_starts_the_run_and_refuses_bad_settings_there() -> None:
    done = run("import dataflows.enrich\ndataflows.enrich.flow", ENRICH_NO_SUCH_SETTING="1")
    assert done.returncode == 2
    assert "ENRICH_NO_SUCH_SETTING" in done.stderr
    assert "Traceback" not in done.stderr


def test_bytewax_gets_the_flow_by_its_attribute_once(tmp_path: Path) -> None:
    code = (
        "import bytewax.run, dataflows.enrich as m\n"
        "flow = bytewax.run._locate_dataflow('dataflows.enrich', 'flow')\n"
        "assert flow is m.flow and flow.flow_id == 'enrich'\n"
        "print('built')\n"
    )
    done = run(
        code,
        ENRICH_SQLITE_PATH=str(tmp_path / "out.sqlite"),
        ENRICH_DEAD_LETTER_PATH=str(tmp_path / "dead.jsonl"),
        ENRICH_METRICS_PORT_IN_USE="warn",
        BYTEWAX_PROMETHEUS_PORT="0",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "built"
