"""`enrich demo-table`: the demo's reference tables as SQLite tables.

So the publisher can be tried without Oracle, and its topics feed the
dataflow's default lookups: `securities` (with the `exchange_id` the second
lookup joins on) and `exchanges`. Each holds its rows as the demo's reference
stream leaves them (the newest version; deleted ones absent; malformed records
skipped), generated from the same `ENRICH_DEMO_*` settings as the dataflow's
demo. The securities table's name, key column and change column are the
publisher's settings; the exchanges table is `exchanges`, keyed by
`exchange_id`, with the same change column. The change column holds the
version the demo's stream gave the row, so a record the publisher sends and
the demo's own (`enrich demo-to-kafka`) carry the same version, and neither
shadows the other in the topic whichever is produced first.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from contextlib import closing
from sqlite3 import Connection
from typing import NamedTuple

from config.base import exit_on_bad_settings
from config.lookups import DEMO_LOOKUPS
from dataflows.flow import demo_source
from dataflows.settings import Settings, load_settings
from operators.records import Kind, RawRecord
from reference.query import quote
from reference.settings import ReferenceTableSettings
from sinks.sqlite import SqliteDialect
from sources.demo import EXCHANGES_PART, DemoSource, build_plan

SECURITY_COLUMNS = tuple(DEMO_LOOKUPS[0].columns)
"""What the dataflow's security lookup keeps; the publisher's default columns too."""
EXCHANGE_LOOKUP = DEMO_LOOKUPS[1]
EXCHANGES_TABLE = EXCHANGE_LOOKUP.demo_table or "exchanges"
EXCHANGE_COLUMNS = tuple(EXCHANGE_LOOKUP.columns)


class DemoRow(NamedTuple):
    values: tuple[str, ...]
    version: int


def _latest(
    records: Iterable[tuple[bytes | None, bytes | None]], columns: Sequence[str]
) -> dict[str, DemoRow]:
    """Each key's newest row after every update, stale version and delete, as the join keeps it."""
    held: dict[str, DemoRow] = {}
    for key, value in records:
        if key is None:
            continue
        lookup_id = key.decode()
        if value is None:
            held.pop(lookup_id, None)
            continue
        try:
            document = json.loads(value)
        except ValueError:
            continue
        version, previous = document["version"], held.get(lookup_id)
        if isinstance(version, int) and (previous is None or version > previous.version):
            held[lookup_id] = DemoRow(tuple(document[name] for name in columns), version)
    return held


def demo_securities(settings: Settings) -> dict[str, DemoRow]:
    """The securities the demo's stream leaves, with their exchange and version."""
    return _latest(
        (
            (key, value)
            for partition in build_plan(demo_source(settings).cfg).partitions
            for kind, key, value in partition
            if kind is Kind.REFERENCE
        ),
        SECURITY_COLUMNS,
    )


def demo_exchanges(settings: Settings) -> dict[str, DemoRow]:
    """The exchanges, read from the demo source's own exchanges partition."""
    source = DemoSource(demo_source(settings).cfg, {"securities": "security", "exchanges": "x"})
    partition = source.build_part("demo_table", EXCHANGES_PART, None)
    records: list[tuple[bytes | None, bytes | None]] = []
    while True:
        try:
            batch = partition.next_batch()
        except StopIteration:
            break
        records.extend((raw.key, raw.value) for raw in batch if type(raw) is RawRecord)
    return _latest(records, EXCHANGE_COLUMNS)


def _replace(
    conn: Connection,
    table: str,
    key_column: str,
    columns: Sequence[str],
    change_column: str,
    rows: dict[str, DemoRow],
) -> None:
    names = [key_column, *columns, change_column]
    target = quote(table, "sqlite")
    conn.execute(f"DROP TABLE IF EXISTS {target}")
    conn.execute(
        f"CREATE TABLE {target} ({quote(key_column, 'sqlite')} TEXT PRIMARY KEY, "
        + ", ".join(f"{quote(c, 'sqlite')} TEXT" for c in columns)
        + f", {quote(change_column, 'sqlite')} INTEGER NOT NULL)"
    )
    conn.executemany(
        f"INSERT INTO {target} ({', '.join(quote(n, 'sqlite') for n in names)}) "
        f"VALUES ({', '.join('?' * len(names))})",
        [(lookup_id, *row.values, row.version) for lookup_id, row in sorted(rows.items())],
    )


def write_tables(
    table: ReferenceTableSettings, securities: dict[str, DemoRow], exchanges: dict[str, DemoRow]
) -> None:
    """Replace both tables in one transaction, so a publisher never reads them half written."""
    with closing(SqliteDialect(table.publish_sqlite_path).connect()) as conn, conn:
        conn.execute("BEGIN")
        change = table.publish_change_column
        _replace(
            conn,
            table.publish_table,
            table.publish_key_column,
            SECURITY_COLUMNS,
            change,
            securities,
        )
        _replace(
            conn, EXCHANGES_TABLE, EXCHANGE_LOOKUP.key_field, EXCHANGE_COLUMNS, change, exchanges
        )


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="enrich demo-table",
        description="Write the demo's securities and exchanges to the SQLite reference tables "
        "the publisher reads (ENRICH_PUBLISH_SQLITE_PATH).",
    ).parse_args(argv)
    with exit_on_bad_settings():
        demo = load_settings(Settings)
        table = load_settings(ReferenceTableSettings)
    if table.publish_database != "sqlite":
        print("the demo table is SQLite: unset ENRICH_PUBLISH_DATABASE", file=sys.stderr)
        return 2
    if table.publish_table.lower() == EXCHANGES_TABLE:
        print(
            f"ENRICH_PUBLISH_TABLE: the demo writes its exchanges to {EXCHANGES_TABLE!r}; "
            "unset it (or name another table) for the securities",
            file=sys.stderr,
        )
        return 2
    securities, exchanges = demo_securities(demo), demo_exchanges(demo)
    write_tables(table, securities, exchanges)
    print(
        f"wrote {len(securities):,} securities to table {table.publish_table!r} and "
        f"{len(exchanges):,} exchanges to table {EXCHANGES_TABLE!r} in {table.publish_sqlite_path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
