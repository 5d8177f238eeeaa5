"""The README's commands, run as written and in its order, against the mock Kafka cluster.

"Publishing reference data" (demo tables, then one publisher per table),
then the two commands of "Kafka" (the demo into the topics, then the
dataflow to the end of them). They must compose: the dataflow's default
lookups find what the publisher's defaults published. Only the interpreter
and the broker address are replaced; smoke sizes come from `ENRICH_DEMO_*`,
which every one of these programs reads.
"""

from __future__ import annotations

import re
import shlex
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from conftest import MockKafka
from flowrun import ROOT, flow_env

from commands.demo_table import demo_securities
from dataflows.flow import decoder, demo_source
from dataflows.settings import Settings, load_settings
from operators.records import Event, Kind, RawRecord
from sources.demo import build_plan

DEMO = {"demo_events": 20_000, "demo_references": 1_000}


def readme_commands(section: str) -> str:
    """The first `sh` block under the README heading `section`."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {section}\n")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.DOTALL)
    assert block is not None, f"no sh block under {section!r}"
    return block.group(1)


def run_commands(commands: str, kafka: MockKafka, work: Path) -> None:
    python = shlex.quote(sys.executable)
    programs = {".venv/bin/python": python, ".venv/bin/enrich": f"{python} -m commands"}
    script = re.sub(r"\.venv/bin/(python|enrich)", lambda m: programs[m[0]], commands).replace(
        "localhost:9092", kafka.bootstrap
    )
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=work,
        env=flow_env(work, **DEMO),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr[-3_000:]}"


def expected_enriched(settings: Settings) -> tuple[int, int]:
    """(good events, good events whose security exists when the demo's stream ends).

    The dataflow reads the reference topics to their end before it looks events
    up, so each quote meets its security's final row: late rows are there
    already, and a security deleted and not re-published misses all its quotes.
    """
    live = set(demo_securities(settings))
    decode = decoder(settings).decode
    good: set[str] = set()
    enriched: set[str] = set()
    for number, partition in enumerate(build_plan(demo_source(settings).cfg).partitions):
        for index, (kind, key, value) in enumerate(partition):
            if kind is not Kind.EVENT:
                continue
            event = decode(RawRecord(kind, key, value, f"plan/{number}/{index}"))
            if type(event) is Event:
                good.add(event.event_id)
                if event.lookup_id in live:
                    enriched.add(event.event_id)
    return len(good), len(enriched)


def test_publishing_the_demo_tables_then_the_kafka_commands_enrich_every_existing_security(
    kafka: MockKafka, tmp_path: Path
) -> None:
    run_commands(readme_commands("Publishing reference data"), kafka, tmp_path)
    run_commands(readme_commands("Kafka"), kafka, tmp_path)

    settings = load_settings(Settings, **DEMO)
    good, enriched = expected_enriched(settings)
    truth = build_plan(demo_source(settings).cfg).truth
    assert good == truth.good_events
    assert good - enriched >= truth.never_existing_events > 0
    with closing(sqlite3.connect(tmp_path / "enriched.sqlite")) as conn:
        counts = dict(
            conn.execute(
                "SELECT coalesce(miss_reason, status), count(*) FROM enriched_events GROUP BY 1"
            )
        )
        unjoined = conn.execute(
            "SELECT count(*) FROM enriched_events WHERE status = 'enriched' "
            "AND (exchange_id IS NULL OR exchange_name IS NULL OR exchange_country IS NULL)"
        ).fetchone()[0]
    assert sum(counts.values()) == good
    assert counts.get("enriched", 0) == enriched, counts
    assert "missing_key" not in counts, counts
    assert unjoined == 0
