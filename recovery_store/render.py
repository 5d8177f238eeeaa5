"""Reports as aligned text for people and as JSON for machines.

JSON keeps times as epoch seconds, as the snapshots hold them; text shows
them as UTC timestamps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime

from recovery_store.report import KeyReport, Report


def as_json(report: Report | KeyReport) -> str:
    return json.dumps(asdict(report), indent=2)


def _time(epoch_seconds: float | None, missing: str = "-") -> str:
    if epoch_seconds is None:
        return missing
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="milliseconds")


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]


def _frontiers(frontiers: dict[int, int]) -> str:
    return " ".join(f"w{worker}={epoch}" for worker, epoch in sorted(frontiers.items())) or "-"


def _positions(positions: dict[str, int]) -> str:
    return " ".join(f"{key}={value}" for key, value in sorted(positions.items())) or "-"


def as_text(report: Report) -> str:
    lines = [
        f"recovery store {report.directory}",
        f"next execution {report.next_execution} resumes at epoch {report.resume_epoch}",
        *(f"PROBLEM: {problem}" for problem in report.problems),
        "",
        "partitions",
        *_partitions_text(report),
        "",
        "executions",
        *_executions_text(report),
        "",
        "snapshots by step: stored over every kept epoch, and loaded on resume",
        *_steps_text(report),
        "",
        *_enrichment_text(report),
    ]
    return "\n".join(lines)


def _partitions_text(report: Report) -> list[str]:
    headers = ("index", "file", "of", "created", "file bytes", "commit epoch", "snapshots", "bytes")
    rows = [
        (p.index, p.file, p.part_count, p.created_at, p.file_bytes,
         "-" if p.commit_epoch is None else p.commit_epoch, p.snapshots, p.snapshot_bytes)
        for p in report.partitions
    ]  # fmt: skip
    return _table(headers, rows)


def _executions_text(report: Report) -> list[str]:
    if not report.executions:
        return ["  none yet: the next run starts from the beginning"]
    headers = ("execution", "workers", "resume epoch", "started", "frontiers")
    rows = [
        (e.ex_num, e.worker_count, e.resume_epoch, e.started_at, _frontiers(e.frontiers))
        for e in report.executions
    ]
    return _table(headers, rows)


def _steps_text(report: Report) -> list[str]:
    headers = ("step", "stored", "bytes", "discards", "epochs", "resumed keys", "resumed bytes",
               "positions")  # fmt: skip
    rows = [
        (s.step_id, s.snapshots, s.bytes, s.discards, f"{s.oldest_epoch}-{s.newest_epoch}",
         s.keys_at_resume, s.bytes_at_resume, _positions(s.positions))
        for s in report.steps
    ]  # fmt: skip
    return _table(headers, rows)


def _enrichment_text(report: Report) -> list[str]:
    e = report.enrichment
    if not e.step_ids:
        return ["enrichment state: none loaded on resume"]
    lines = [
        f"enrichment state loaded on resume ({', '.join(e.step_ids)})",
        f"  shards held {e.shards_held}, with pending events {e.shards_with_pending}; "
        f"segments of parked events {e.segments}",
        f"  events pending {e.events_pending} for {e.lookup_ids_pending} lookup ids, "
        f"{e.events_held} of them held until the reference source has caught up",
        f"  oldest arrival {_time(e.oldest_arrival)}",
        f"  deadlines from {_time(e.earliest_deadline)} to {_time(e.latest_deadline)}",
        "",
        "pending events by lookup: held in the join's shards, parked in its segments",
        *_table(
            ("lookup", "shards", "with pending", "segments", "pending", "held", "lookup ids",
             "oldest arrival", "earliest deadline"),
            [
                (w.lookup, w.shards, w.shards_with_pending, w.segments, w.events_pending,
                 w.events_held, w.lookup_ids_pending, _time(w.oldest_arrival),
                 _time(w.earliest_deadline))
                for w in e.lookups
            ],
        ),
        *(
            f"lookup {w.lookup!r} times out on the event clock: watermark {_time(w.watermark)} "
            "(its deadlines are event times)"
            for w in e.lookups
            if w.watermark is not None
        ),
    ]  # fmt: skip
    if e.most_pending:
        lines += ["", "lookup ids with the most pending events"]
        lines += _table(
            ("lookup", "lookup id", "shard", "segments", "pending", "earliest deadline"),
            [
                (p.lookup, p.lookup_id, p.shard, p.segments, p.events,
                 _time(p.earliest_deadline, "held"))
                for p in e.most_pending
            ],
        )  # fmt: skip
    return lines


def key_as_text(report: KeyReport) -> str:
    lines = [
        f"lookup id {report.lookup_id!r} at resume epoch {report.resume_epoch}",
        *(f"PROBLEM: {problem}" for problem in report.problems),
    ]
    if report.pending:
        lines.append(f"  {len(report.pending)} pending events, oldest first:")
        headers = ("event id", "lookup", "shard", "segment", "arrived", "deadline", "event time",
                   "origin", "fields")  # fmt: skip
        lines += _table(
            headers,
            [
                (
                    p.event_id,
                    p.lookup,
                    p.shard,
                    p.segment or "-",
                    _time(p.arrived),
                    _time(p.deadline, "held"),
                    _time(p.event_time),
                    p.origin,
                    json.dumps(p.fields, sort_keys=True, separators=(",", ":")),
                )
                for p in report.pending
            ],
        )
    else:
        lines.append("  no pending events")
    lines.append(f"  row and version: not available; {report.note}")
    return "\n".join(lines)
