"""`enrich recovery DIR` / `python -m recovery_store DIR`: inspect recovery partitions.

Exit status: 0 when the store reads and Bytewax could resume from it; 1 when
it reads but Bytewax would refuse to resume, or a waiting event's content is
invalid (the problems are printed); 2 when it cannot be read, may not be
trusted (see `recovery_store.trust`) or a snapshot is refused, with the
reason on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from recovery_store.render import as_json, as_text, key_as_text
from recovery_store.report import SnapshotError, build_key_report, build_report
from recovery_store.store import StoreError, read_store
from recovery_store.trust import TRUSTED_GROUP_VARIABLE

OK, PROBLEMS, UNREADABLE = 0, 1, 2


def _at_least_one(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} is not a positive count")
    return number


def _group_id(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a group id")
    return number


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="enrich recovery",
        description="Inspect Bytewax recovery partitions read-only, also while a dataflow runs.",
    )
    parser.add_argument("directory", type=Path, help="the recovery directory (-r of bytewax.run)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--key", metavar="K", help="show the pending events of lookup id K")
    parser.add_argument(
        "--top",
        type=_at_least_one,
        default=10,
        metavar="N",
        help="lookup ids listed by pending events",
    )
    parser.add_argument(
        "--trusted-group",
        type=_group_id,
        default=os.environ.get(TRUSTED_GROUP_VARIABLE),
        metavar="GID",
        help=f"a group that may write the store (default: ${TRUSTED_GROUP_VARIABLE})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        store = read_store(args.directory, trusted_group=args.trusted_group)
        if args.key is not None:
            key_report = build_key_report(store, args.key)
            print(as_json(key_report) if args.json else key_as_text(key_report))
            return PROBLEMS if key_report.problems else OK
        report = build_report(store, args.top)
    except (StoreError, SnapshotError) as exc:
        print(f"enrich recovery: {exc}", file=sys.stderr)
        return UNREADABLE
    print(as_json(report) if args.json else as_text(report))
    return PROBLEMS if report.problems else OK
