"""Which database the main sink writes to, and how it treats failures, from settings.

Shared by the dataflow's wiring and the table-creation command, so both
always talk to the same tables.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

from dataflows.settings import Settings
from sinks.dialect import Dialect
from sinks.retry import RetryPolicy
from sinks.sqlite import CannotOpen, SqliteDialect
from sinks.table import DeadLetterTable


def dialect(settings: Settings) -> Dialect[Any]:
    """SQLite by default; Oracle when `ENRICH_DATABASE=oracle`.

    The Oracle pool holds at most `oracle_pool_max` connections per process,
    by default `sink_partitions`: as many as the partitions one process can
    own, each holding one connection while it runs.
    """
    if settings.database == "sqlite":
        return SqliteDialect(settings.sqlite_path)
    # Imported here: python-oracledb takes about 0.2 s to import, which SQLite runs never need.
    from sinks.oracle import OracleDialect

    return OracleDialect.from_settings(
        settings,
        pool_min=settings.oracle_pool_min,
        pool_max=settings.oracle_pool_max or settings.sink_partitions,
        pool_timeout_seconds=settings.oracle_pool_timeout_seconds,
    )


def dead_letter_table(settings: Settings) -> DeadLetterTable:
    return DeadLetterTable(settings.dead_letter_table)


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        initial_seconds=settings.sink_retry_initial_seconds,
        max_seconds=settings.sink_retry_max_seconds,
        breaker_failures=settings.sink_breaker_failures,
        breaker_reset_seconds=settings.sink_breaker_reset_seconds,
    )


def cannot_open(settings: Settings) -> str | None:
    """Why the SQLite database cannot be opened, naming the setting; None when it can.

    Checked once at start, so an unusable path is one sentence and exit 1
    rather than a sink partition's error deep inside the running dataflow.
    Oracle is not checked here: reaching it may take retries, which the sink does.
    """
    if settings.database != "sqlite":
        return None
    try:
        with closing(SqliteDialect(settings.sqlite_path).connect()):
            return None
    except CannotOpen as exc:
        return f"{exc}. Set ENRICH_SQLITE_PATH to a file where this user can write."
    except sqlite3.OperationalError as exc:  # still locked when the busy timeout ran out
        return (
            f"{settings.sqlite_path} (ENRICH_SQLITE_PATH) stayed locked by another process "
            f"for the whole busy timeout: {exc}. Stop whatever holds it, or use another file."
        )
