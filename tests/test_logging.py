"""Structured, levelled logging that never writes a secret, in-process and from the entry point."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flowrun import ROOT, flow_env
from prometheus_client import REGISTRY

from dataflows.settings import Settings, load_settings
from telemetry import metrics
from telemetry.logging import REDACTED, configure_logging, public_settings, secret_values
from telemetry.logging import start_logging as start
from telemetry.progress import Progress

PASSWORD = 'pa"ss\\word'
"""Holds characters JSON and repr escape, so every spelling of it must be caught."""
KEY_PASSWORD = "hunter2-key"
SECRET_FIELDS = {"kafka_config", "kafka_sasl_password"}

log = logging.getLogger("enrich.test")


@pytest.fixture(autouse=True)
def restore_root_logging() -> Iterator[None]:
    """Each test configures the root logger onto its own captured stderr; put it back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def settings() -> Settings:
    return load_settings(
        kafka_sasl_password=PASSWORD, kafka_config={"ssl.key.password": KEY_PASSWORD}
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_carry_time_level_logger_message_and_extra_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")
    log.info("wrote %d rows", 12, extra={"partition": "03", "rows": 12})
    (line,) = json_lines(capsys.readouterr().err)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line.pop("time"))
    assert line == {
        "level": "INFO",
        "logger": "enrich.test",
        "message": "wrote 12 rows",
        "partition": "03",
        "rows": 12,
    }


def test_json_lines_carry_the_exception(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    try:
        raise ValueError("bad batch")
    except ValueError:
        log.exception("sink failed")
    (line,) = json_lines(capsys.readouterr().err)
    assert (line["level"], line["message"]) == ("ERROR", "sink failed")
    assert line["exception"].startswith("Traceback")
    assert line["exception"].endswith("ValueError: bad batch")


def test_text_lines_below_the_level_are_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING", "text")
    log.info("not shown")
    log.warning("shown %s", "once")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING enrich\.test shown once", lines[0]
    )


def test_configuring_again_replaces_the_handler(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text")
    configure_logging("DEBUG", "json")
    log.debug("one line")
    (line,) = json_lines(capsys.readouterr().err)
    assert line["message"] == "one line"


def test_settings_are_logged_without_their_secret_fields(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert set(secret_values(settings)) == {PASSWORD, KEY_PASSWORD}
    assert set(public_settings(settings)) == set(Settings.model_fields) - SECRET_FIELDS

    start(settings.model_copy(update={"log_format": "json"}))
    (line,) = json_lines(capsys.readouterr().err)
    assert line["logger"] == "enrich"
    assert line["message"].startswith("starting with ")
    assert f'source="{settings.source}"' in line["message"]
    assert f"shards={settings.shards}" in line["message"]
    assert set(line["settings"]) == set(Settings.model_fields) - SECRET_FIELDS
    assert not any(field in line["message"] for field in SECRET_FIELDS)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_secret_slipping_into_a_message_or_exception_is_redacted(
    settings: Settings, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    configure_logging("INFO", fmt, secret_values(settings))  # type: ignore[arg-type]
    log.error("connect failed with %s", settings.kafka_client_config())
    try:
        raise RuntimeError(f"authentication failed for {PASSWORD!r} / {KEY_PASSWORD}")
    except RuntimeError:
        log.exception("giving up", extra={"config": settings.kafka_client_config()})
    err = capsys.readouterr().err
    assert REDACTED in err
    for secret in (PASSWORD, KEY_PASSWORD, 'pa\\"ss', 'pa"ss', "ss\\\\word", "hunter2"):
        assert secret not in err


def registry_count(name: str, **labels: str) -> int:
    return int(REGISTRY.get_sample_value(name, labels) or 0)


def test_progress_lines_carry_their_numbers_as_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    progress = Progress(interval=60.0)
    progress.report()
    metrics.RECORDS_IN.labels("event").inc(250)
    progress.report()
    first, second = json_lines(capsys.readouterr().err)
    assert second["logger"] == "enrich.progress"
    assert second["events"] == registry_count("enrich_records_in_total", kind="event")
    assert second["events"] - first["events"] == 250
    assert second["events_per_second"] > 0
    for field, status in (("enriched", "enriched"), ("late", "late_enriched")):
        assert second[field] == registry_count("enrich_sink_rows_total", status=status)
    assert second["message"].startswith(f"events {second['events']:,} (")


def test_the_entry_point_logs_json_and_never_a_secret(tmp_path: Path) -> None:
    """The demo, configured by environment with secrets, writes only JSON lines on stderr."""
    env = flow_env(
        tmp_path,
        demo_events=2000,
        demo_references=200,
        log_level="INFO",
        log_format="json",
        progress_seconds=2.0,
        kafka_sasl_password=PASSWORD,
        kafka_config=json.dumps({"ssl.key.password": KEY_PASSWORD}),
    )
    result = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "dataflows.enrich"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3_000:]
    lines = json_lines(result.stderr)
    assert lines[0]["logger"] == "enrich"
    assert lines[0]["settings"]["demo_events"] == 2000
    assert {line["level"] for line in lines} <= {"INFO", "WARNING"}
    assert "run summary" in result.stdout
    for secret in (PASSWORD, KEY_PASSWORD, "hunter2"):
        assert secret not in result.stdout + result.stderr
