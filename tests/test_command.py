"""`enrich SUBCOMMAND`: one command for every program besides the dataflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from commands import cli
from commands.check import main as check
from recovery_store.cli import main as recovery_main

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {
    "ENRICH_KAFKA_SASL_PASSWORD": "sasl-hunter2",
    "ENRICH_ORACLE_PASSWORD": "oracle-hunter2",
    "ENRICH_KAFKA_CONFIG": json.dumps({"ssl.key.password": "nested-hunter2"}),
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("ENRICH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ENRICH_SQLITE_PATH", str(tmp_path / "enriched.sqlite"))
    return monkeypatch


def test_check_prints_every_setting_with_each_secret_masked(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in SECRETS.items():
        env.setenv(name, value)
    env.setenv("ENRICH_SHARDS", "8")
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    lines = dict(line.split("=", 1) for line in out.splitlines())
    assert lines["ENRICH_SHARDS"] == "8"
    assert lines["ENRICH_KAFKA_SASL_PASSWORD"] == "**********"
    assert lines["ENRICH_ORACLE_PASSWORD"] == "**********"
    assert json.loads(lines["ENRICH_KAFKA_CONFIG"]) == {"ssl.key.password": "**********"}
    assert json.loads(lines["ENRICH_LOOKUPS"])[0]["name"] == "security"


def test_check_of_the_publisher_masks_its_secrets_too(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in SECRETS.items():
        env.setenv(name, value)
    env.setenv("ENRICH_KAFKA_BROKERS", "127.0.0.1:1")
    assert check(["--publisher"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "ENRICH_PUBLISH_TABLE=securities" in out


def test_check_connects_to_nothing(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens on port 1; any connection attempt would wait or fail.
    env.setenv("ENRICH_SOURCE", "kafka")
    env.setenv("ENRICH_KAFKA_BROKERS", "127.0.0.1:1")
    env.setenv("ENRICH_DATABASE", "oracle")
    for name in ("ENRICH_ORACLE_USER", "ENRICH_ORACLE_PASSWORD"):
        env.setenv(name, "x")
    env.setenv("ENRICH_ORACLE_DSN", "127.0.0.1:1/none")
    started = time.monotonic()
    assert check([]) == 0
    assert time.monotonic() - started < 5
    assert "ENRICH_DATABASE=oracle" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "variable"),
    [
        (["check"], "ENRICH_SHARDS"),
        (["check", "--publisher"], "ENRICH_KAFKA_BROKERS"),
        (["create-tables", "--print"], "ENRICH_SHARDS"),
    ],
)
def test_a_bad_setting_exits_2_naming_the_variable(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], variable: str
) -> None:
    env.setenv("ENRICH_SHARDS", "0")
    with pytest.raises(SystemExit) as stopped:
        cli.main(args)
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert variable in captured.err and captured.out == ""


def test_a_miss_default_decode_would_refuse_exits_2_naming_lookup_column_and_rule(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It reached the table undecoded and failed there, row by row; now start-up stops."""
    lookup = {"name": "security", "key_field": "security_id", "demo_table": "securities"}
    lookup["columns"] = {"cusip": "str", "price": "float"}  # type: ignore[assignment]
    lookup["miss_defaults"] = {"price": float("nan")}  # type: ignore[assignment]
    env.setenv("ENRICH_LOOKUPS", json.dumps([lookup]))
    with pytest.raises(SystemExit) as stopped:
        cli.main(["check"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "ENRICH_LOOKUPS: [0].miss_defaults: lookup 'security', column price:" in err
    assert "finite number" in err and "Traceback" not in err


def test_the_demo_loader_refuses_a_demo_lookup_without_a_topic(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It would have sent the lookup's rows to topic None; now it stops before connecting."""
    lookup = {"name": "security", "key_field": "security_id", "demo_table": "securities"}
    lookup["columns"] = {"cusip": "str"}  # type: ignore[assignment]
    env.setenv("ENRICH_LOOKUPS", json.dumps([lookup]))
    env.setenv("ENRICH_KAFKA_BROKERS", "127.0.0.1:1")
    env.setenv("ENRICH_KAFKA_START_TIMEOUT_SECONDS", "1")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["demo-to-kafka"])
    assert stopped.value.code == 2
    assert "ENRICH_LOOKUPS: lookup 'security'" in capsys.readouterr().err


def test_subcommands_dispatch_with_their_arguments(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["create-tables", "--print"]) == 0
    assert "CREATE TABLE" in capsys.readouterr().out
    store = tmp_path / "recovery"
    store.mkdir()
    expected = recovery_main([str(store), "--json"])
    expected_out = capsys.readouterr()
    assert cli.main(["recovery", str(store), "--json"]) == expected
    assert capsys.readouterr() == expected_out
    for name in cli.SUBCOMMANDS:
        with pytest.raises(SystemExit) as stopped:
            cli.main([name, "--help"])
        assert stopped.value.code == 0
        assert f"usage: enrich {name}" in capsys.readouterr().out


def test_no_or_an_unknown_subcommand_prints_the_list_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main([]) == 2
    assert "demo-to-kafka" in capsys.readouterr().err
    assert cli.main(["publsh"]) == 2
    assert "no subcommand 'publsh'" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0
    assert "check" in capsys.readouterr().out


def test_the_command_is_installed_as_enrich_and_runs_as_a_module(tmp_path: Path) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["enrich"] == "commands.cli:main"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRICH_")}
    done = subprocess.run(
        [sys.executable, "-m", "commands", "check"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT), "ENRICH_KAFKA_SASL_PASSWORD": "hunter2"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "ENRICH_KAFKA_SASL_PASSWORD=**********" in done.stdout
    assert "hunter2" not in done.stdout + done.stderr
