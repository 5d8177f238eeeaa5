"""`python -m reference.demo_table`: the demo's securities as a SQLite reference table.

So the publisher can be tried without Oracle. The table holds each security
as the demo's reference stream leaves it (its newest version; deleted ones
absent; malformed records skipped), generated from the same `ENRICH_DEMO_*`
settings as the dataflow's demo. Its name, key column and change column are
the publisher's settings; the change column is the time of writing, as a
nightly reload would stamp it.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import closing

from dataflows.flow import demo_source
from dataflows.settings import Settings, exit_on_bad_settings, load_settings
from operators.records import Kind
from reference.query import quote
from reference.settings import ReferenceTableSettings
from sinks.sqlite import SqliteDialect
from sources.demo import Row, build_plan

DEMO_COLUMNS = ("cusip", "name", "sector")


def demo_securities(settings: Settings) -> dict[str, Row]:
    """Each security's latest row after every planned update, stale version and delete."""
    held: dict[str, tuple[int, Row]] = {}
    for partition in build_plan(demo_source(settings).cfg).partitions:
        for kind, key, value in partition:
            if kind is not Kind.REFERENCE or key is None:
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
            if isinstance(version, int) and (previous is None or version > previous[0]):
                row = (document["cusip"], document["name"], document["sector"])
                held[lookup_id] = (version, row)
    return {lookup_id: row for lookup_id, (_, row) in held.items()}


def write_table(table: ReferenceTableSettings, securities: dict[str, Row]) -> None:
    """Replace the table in one transaction, so a publisher never reads it half written."""
    names = [table.publish_key_column, *DEMO_COLUMNS, table.publish_change_column]
    quoted = ", ".join(quote(name, "sqlite") for name in names)
    target = quote(table.publish_table, "sqlite")
    stamp = int(time.time())
    with closing(SqliteDialect(table.publish_sqlite_path).connect()) as conn, conn:
        conn.execute("BEGIN")
        conn.execute(f"DROP TABLE IF EXISTS {target}")
        conn.execute(
            f"CREATE TABLE {target} ({quote(names[0], 'sqlite')} TEXT PRIMARY KEY, "
            + ", ".join(f"{quote(c, 'sqlite')} TEXT" for c in DEMO_COLUMNS)
            + f", {quote(names[-1], 'sqlite')} INTEGER NOT NULL)"
        )
        conn.executemany(
            f"INSERT INTO {target} ({quoted}) VALUES ({', '.join('?' * len(names))})",
            [(lookup_id, *row, stamp) for lookup_id, row in sorted(securities.items())],
        )


def main() -> int:
    with exit_on_bad_settings():
        demo = load_settings(Settings)
        table = load_settings(ReferenceTableSettings)
    if table.publish_database != "sqlite":
        print("the demo table is SQLite: unset ENRICH_PUBLISH_DATABASE", file=sys.stderr)
        return 2
    securities = demo_securities(demo)
    write_table(table, securities)
    print(
        f"wrote {len(securities):,} securities to table {table.publish_table!r} "
        f"in {table.publish_sqlite_path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
