"""`enrich SUBCOMMAND ...`: every program a user runs besides the dataflow itself.

The dataflow runs as `python -m bytewax.run dataflows.enrich`, as Bytewax
wants. Each subcommand's module is imported only when it runs, so `enrich
check` loads no Kafka or Oracle code.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple


class Subcommand(NamedTuple):
    target: str
    """`module:function`; the function takes the remaining arguments."""
    summary: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "check": Subcommand(
        "commands.check:main",
        "validate the settings, print them with secrets masked; connects to nothing",
    ),
    "publish": Subcommand(
        "commands.publish:main", "publish a lookup's reference table to its Kafka topic"
    ),
    "create-tables": Subcommand(
        "commands.create_tables:main", "create the sink's tables, or print their DDL (--print)"
    ),
    "recovery": Subcommand(
        "recovery_store.cli:main", "inspect a recovery store, read-only (enrich recovery DIR)"
    ),
    "demo-to-kafka": Subcommand(
        "commands.demo_to_kafka:main", "produce the demo's events and reference rows to Kafka"
    ),
    "demo-table": Subcommand(
        "commands.demo_table:main", "write the demo's reference tables to SQLite for publishing"
    ),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {sub.summary}" for name, sub in SUBCOMMANDS.items())
    return (
        "usage: enrich SUBCOMMAND [ARGS...]   (enrich SUBCOMMAND --help for its arguments)\n\n"
        f"subcommands:\n{rows}\n\n"
        "The dataflow itself: python -m bytewax.run dataflows.enrich"
    )


def resolve(name: str) -> Callable[[Sequence[str]], int | None]:
    module, _, function = SUBCOMMANDS[name].target.partition(":")
    main: Callable[[Sequence[str]], int | None] = getattr(importlib.import_module(module), function)
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"enrich: no subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return resolve(name)(rest) or 0


if __name__ == "__main__":
    raise SystemExit(main())
