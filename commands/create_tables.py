"""Create the sink's tables from the dataflow's own `ENRICH_*` settings.

    enrich create-tables            # or: python -m commands create-tables
    enrich create-tables --print    # the DDL, for a DBA; connects to nothing

Creates the enriched table (primary key event_id, index on lookup_id) and the
dead-letter table (primary key origin) in ENRICH_DATABASE, leaving tables
that exist alone; the sink does the same at start. Exit status: 0 done,
1 the database refused, 2 a bad setting.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from config.base import exit_on_bad_settings
from dataflows import database
from dataflows.flow import table
from dataflows.settings import load_settings
from sinks.schema import create_tables, ddl

_NO_CREDENTIALS = {"oracle_user": "-", "oracle_password": "-", "oracle_dsn": "-"}
"""Stand-ins for `--print`, which builds the Oracle dialect but never connects it."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="enrich create-tables",
        description="Create the enriched and dead-letter tables from ENRICH_* settings.",
    )
    parser.add_argument(
        "--print",
        action="store_true",
        dest="print_only",
        help="print the DDL instead of running it; connects to nothing",
    )
    args = parser.parse_args(argv)
    with exit_on_bad_settings():
        # The DDL needs no connection, so Oracle's credentials are not asked for.
        settings = load_settings(**(_NO_CREDENTIALS if args.print_only else {}))
    dialect = database.dialect(settings)
    tables = (table(settings), database.dead_letter_table(settings))
    if args.print_only:
        for statement in ddl(dialect, *tables):
            print(f"{statement};")
        return 0
    try:
        create_tables(dialect, *tables)
    except Exception as exc:
        print(f"enrich create-tables: {exc}", file=sys.stderr)
        return 1
    names = ", ".join(t.name for t in tables)
    print(f"tables in place in the {settings.database} database: {names}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
