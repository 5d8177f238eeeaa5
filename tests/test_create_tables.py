"""`enrich create-tables`: the sink's tables from settings, idempotent, or as DDL."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tomllib
from contextlib import closing
from pathlib import Path
from typing import Any

import oracledb
import pytest

from commands.create_tables import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("ENRICH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ENRICH_SQLITE_PATH", str(tmp_path / "out" / "enriched.sqlite"))
    return monkeypatch


def schema(path: Path) -> dict[str, Any]:
    with closing(sqlite3.connect(path)) as conn:
        tables = {
            name: {row[1]: row[5] for row in conn.execute(f'PRAGMA table_info("{name}")')}
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        indexes = {
            name: [row[2] for row in conn.execute(f'PRAGMA index_info("{name}")')]
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
    return {"tables": tables, "indexes": indexes}


def test_creates_both_tables_with_their_keys_and_an_index_and_runs_again_harmlessly(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("ENRICH_SINK_LOOKUP_INDEX", "true")
    db = tmp_path / "out" / "enriched.sqlite"
    assert main([]) == 0
    assert "enriched_events, enrich_dead_letters" in capsys.readouterr().out
    first = schema(db)
    keys = {
        name: [c for c, pk in columns.items() if pk] for name, columns in first["tables"].items()
    }
    assert keys == {"enriched_events": ["event_id"], "enrich_dead_letters": ["origin"]}
    assert first["indexes"] == {"enriched_events_lookup_id": ["lookup_id"]}
    assert list(first["tables"]["enrich_dead_letters"]) == [
        "origin",
        "reason",
        "code",
        "detail",
        "event_id",
        "lookup_id",
        "payload",
        "dead_lettered_at",
    ]
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("INSERT INTO enrich_dead_letters (origin, dead_lettered_at) VALUES ('o', 't')")
    assert main([]) == 0
    assert schema(db) == first
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT origin FROM enrich_dead_letters").fetchall() == [("o",)]


def test_names_come_from_the_settings(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("ENRICH_TABLE", "quotes")
    env.setenv("ENRICH_DEAD_LETTER_TABLE", "refused")
    env.setenv("ENRICH_EVENT_FIELDS", '{"size": "int", "date": "str"}')
    assert main([]) == 0
    tables = schema(tmp_path / "out" / "enriched.sqlite")["tables"]
    assert set(tables) == {"quotes", "refused"}
    assert {"size", "date"} <= set(tables["quotes"])


def test_by_default_neither_database_gets_the_lookup_index(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ENRICH_SINK_LOOKUP_INDEX is false by default: the sink itself never reads by lookup_id,
    and the index costs about a fifth of the end-to-end rate (docs/BENCHMARKS.md)."""
    assert main([]) == 0
    assert schema(tmp_path / "out" / "enriched.sqlite")["indexes"] == {}
    capsys.readouterr()
    env.setenv("ENRICH_DATABASE", "oracle")
    assert main(["--print"]) == 0
    out = capsys.readouterr().out
    assert out.count(";\n") == 2 and "CREATE INDEX" not in out


def test_print_shows_the_ddl_and_touches_no_database(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("ENRICH_SINK_LOOKUP_INDEX", "true")
    assert main(["--print"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        'CREATE TABLE IF NOT EXISTS "enriched_events" ("event_id" TEXT PRIMARY KEY NOT NULL, '
        '"lookup_id" TEXT NOT NULL, "event_time" REAL, "status" TEXT NOT NULL, '
        '"miss_reason" TEXT, "waited_ms" REAL NOT NULL, "ref_version" NUMERIC, '
        '"arrival_seq" INTEGER NOT NULL, "price" REAL, '
        '"size" INTEGER, "cusip" TEXT, "name" TEXT, "sector" TEXT, "exchange_id" TEXT, '
        '"exchange_name" TEXT, "exchange_country" TEXT, "stages" TEXT NOT NULL, '
        '"attributes" TEXT);',
        'CREATE INDEX IF NOT EXISTS "enriched_events_lookup_id" ON "enriched_events" '
        '("lookup_id");',
        'CREATE TABLE IF NOT EXISTS "enrich_dead_letters" ("origin" TEXT PRIMARY KEY NOT NULL, '
        '"reason" TEXT, "code" TEXT, "detail" TEXT, "event_id" TEXT, "lookup_id" TEXT, '
        '"payload" TEXT, "dead_lettered_at" TEXT NOT NULL);',
    ]
    assert not (tmp_path / "out").exists()


def test_print_for_oracle_connects_to_nothing(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_pool(**kwargs: Any) -> None:
        raise AssertionError("--print must not connect")

    env.setattr(oracledb, "create_pool", no_pool)
    for name, value in {
        "DATABASE": "oracle",
        "ORACLE_USER": "enrich",
        "ORACLE_PASSWORD": "ora-s3cret",
        "ORACLE_DSN": "db:1521/FREEPDB1",
        "SINK_LOOKUP_INDEX": "true",
    }.items():
        env.setenv(f"ENRICH_{name}", value)
    assert main(["--print"]) == 0
    out = capsys.readouterr().out
    assert out.count(";\n") == 3
    assert out.startswith('CREATE TABLE "ENRICHED_EVENTS" ("EVENT_ID" VARCHAR2(1000 CHAR) ')
    assert 'CREATE INDEX "ENRICHED_EVENTS_LOOKUP_ID"' in out
    assert 'CREATE TABLE "ENRICH_DEAD_LETTERS"' in out
    assert "ora-s3cret" not in out


def test_a_refusing_database_exits_1_with_its_message(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "enriched.sqlite").write_text("not a database")
    assert main([]) == 1
    assert "enrich create-tables: file is not a database" in capsys.readouterr().err


def test_an_unwritable_location_exits_1_naming_the_path(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a_file").write_text("")
    path = tmp_path / "a_file" / "enriched.sqlite"
    env.setenv("ENRICH_SQLITE_PATH", str(path))
    assert main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"enrich create-tables: cannot open SQLite database {path}: ")
    assert "writable by this user" in err


def test_print_for_oracle_needs_no_credentials(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("ENRICH_DATABASE", "oracle")
    assert main(["--print"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith('CREATE TABLE "ENRICHED_EVENTS" (')
    assert captured.out.count(";\n") == 2
    assert captured.err == ""


def test_creating_oracle_tables_still_asks_for_the_credentials(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("ENRICH_DATABASE", "oracle")
    with pytest.raises(SystemExit) as stopped:
        main([])
    assert stopped.value.code == 2
    assert "oracle_user, oracle_password, oracle_dsn must be set" in capsys.readouterr().err


def test_a_bad_setting_exits_2_naming_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRICH_")}
    env |= {"PYTHONPATH": str(ROOT), "ENRICH_DEAD_LETTER_TABLE": "no such table"}
    done = subprocess.run(
        [sys.executable, "-m", "commands.create_tables", "--print"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "ENRICH_DEAD_LETTER_TABLE: 'no such table' is not a valid" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_the_command_is_installed_as_enrich_create_tables() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["enrich-create-tables"] == "commands.create_tables:main"  # alias, one release
