"""A miss storm against all hits, side by side in one run; prints a Markdown table.

    python bench/bench_storm.py                 # 200,000 events
    python bench/bench_storm.py --events 1000000
    python bench/bench_storm.py --smoke         # tiny, for the test suite

Both runs are the demo entry point (`bytewax.run dataflows.enrich`) with
recovery on and 1 s epochs, as in production. In the storm, the first
lookup's filter matches no reference row and the miss timeout is an hour,
so every event waits until the end of input: the state a failed reference
feed builds up. The all-hits run is the same demo without the filter.

Snapshot bytes per epoch are read from the recovery store afterwards: the
runs keep every snapshot (a backup interval longer than the run), so the
store holds exactly what each epoch wrote. RSS is sampled from /proc while
the run goes. The host is shared and noisy, so compare the two rows of one
run (the ratio), not absolute figures across runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import deque
from collections.abc import Mapping
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
NO_ROW = [{"field": "sector", "op": "==", "value": "no such sector"}]
"""A reference filter no demo row matches: every security lookup misses."""


@dataclass(frozen=True)
class Run:
    label: str
    events: int
    seconds: float
    peak_rss_mb: float
    store_mb: float
    epochs: int
    statuses: dict[str, int]
    """Rows of the enriched table by status/miss reason: proof every event went through."""
    bytes_per_epoch: list[int]
    waiting_per_epoch: list[int]
    """Waiting events in each epoch's snapshots: in a storm, every shard's, so the backlog."""
    """Snapshot bytes each epoch wrote, over every step, in epoch order."""

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def lookups(storm: bool) -> str:
    """The demo chain; in a storm, the first lookup's rows are all filtered out."""
    sys.path.insert(0, str(ROOT))
    from config.lookups import DEMO_LOOKUPS

    chain = [lookup.model_dump(mode="json", exclude_none=True) for lookup in DEMO_LOOKUPS]
    if storm:
        chain[0]["filter"] = NO_ROW
    return json.dumps(chain)


def _rss_mb(pid: int) -> float:
    """RSS of a process and its children (bytewax.run may fork), in MB."""
    total = 0
    for proc in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{proc}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(child) for child in found]


def snapshot_bytes(recovery: Path) -> dict[int, tuple[int, int]]:
    """Per epoch: bytes of snapshot blobs written, and the backlog a resume from it would load.

    The backlog counts every state key's newest snapshot up to that epoch: a
    segment of parked events (`park_` steps) is written when it changes only.
    """
    sys.path.insert(0, str(ROOT))
    from operators.parking import waiting_in
    from recovery_store.unpickle import loads

    written: dict[int, int] = {}
    counts: dict[int, dict[tuple[str, str], int]] = {}
    for part in sorted(recovery.glob("part-*.sqlite3")):
        with closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True)) as conn:
            for epoch, step, key, blob in conn.execute(
                "SELECT snap_epoch, step_id, state_key, ser_change FROM snaps"
            ):
                written[epoch] = written.get(epoch, 0) + len(blob or b"")
                if step.startswith(("enrich.enrich_", "enrich.park_")):
                    state = None if blob is None else loads(blob)
                    waiting = len(waiting_in(state)) if state else 0
                    counts.setdefault(epoch, {})[step, key] = waiting
    per_epoch: dict[int, tuple[int, int]] = {}
    latest: dict[tuple[str, str], int] = {}
    for epoch in sorted(written):
        latest.update(counts.get(epoch, {}))
        per_epoch[epoch] = written[epoch], sum(latest.values())
    return per_epoch


def run(
    label: str, events: int, storm: bool, workers: int = 1, extra: Mapping[str, str] | None = None
) -> Run:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        recovery = work / "recovery"
        recovery.mkdir()
        subprocess.run(
            [sys.executable, "-m", "bytewax.recovery", str(recovery), str(workers)],
            cwd=ROOT,
            check=True,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ENRICH_", "BYTEWAX_"))}
        env.update(
            PYTHONPATH=str(ROOT),
            ENRICH_SQLITE_PATH=str(work / "out.sqlite"),
            ENRICH_DEAD_LETTER_PATH=str(work / "dlq.jsonl"),
            ENRICH_PROGRESS_SECONDS="0",
            ENRICH_LOG_LEVEL="WARNING",
            ENRICH_DEMO_EVENTS=str(events),
            ENRICH_MISS_TIMEOUT_SECONDS="3600",
            ENRICH_LOOKUPS=lookups(storm),
            **(extra or {}),
        )
        started = time.perf_counter()
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "bytewax.run", "dataflows.enrich",
                "-w", str(workers), "-r", str(recovery), "-s", "1", "-b", "86400",
            ],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        peak = [0.0]

        def sample() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], _rss_mb(proc.pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        output, _ = proc.communicate()
        seconds = time.perf_counter() - started
        sampler.join()
        if proc.returncode != 0:
            raise SystemExit(f"{label} run exited {proc.returncode}:\n{output.decode()[-3000:]}")
        per_epoch = snapshot_bytes(recovery)
        with closing(sqlite3.connect(work / "out.sqlite")) as conn:
            statuses = dict(
                conn.execute(
                    "SELECT status || COALESCE('/' || miss_reason, ''), COUNT(*) "
                    "FROM enriched_events GROUP BY 1"
                )
            )
        store = sum(path.stat().st_size for path in recovery.iterdir())
        return Run(
            label,
            events,
            seconds,
            peak[0],
            store / 1e6,
            len(per_epoch),
            statuses,
            [per_epoch[epoch][0] for epoch in sorted(per_epoch)],
            [per_epoch[epoch][1] for epoch in sorted(per_epoch)],
        )


def demo_events(count: int) -> list[Any]:
    """Events as the demo's decoder makes them, for the first lookup."""
    sys.path.insert(0, str(ROOT))
    from dataflows.flow import decoder, demo_source
    from dataflows.settings import load_settings
    from operators.decode import decode_batch
    from operators.records import Event

    settings = load_settings(demo_events=count, demo_references=1_000)
    source = demo_source(settings)
    found: list[Any] = []
    check = decoder(settings)
    for part in source.list_parts():
        partition = source.build_part("bench", part, None)
        with suppress(StopIteration):
            while True:
                decoded = decode_batch(check, settings.lookups[0].name, partition.next_batch())
                for items in decoded.good.values():
                    found.extend(item for item in items if type(item) is Event)
    return found


def per_waiting_event(count: int) -> dict[str, float]:
    """Memory and snapshot cost per waiting event: the compact form kept now, and object graphs.

    Memory is measured with tracemalloc over the shards' whole state; the
    events come from the demo's decoder, so their fields are fresh strings as
    in production. Snapshot cost is `pickle.dumps` of every shard's state, as
    Bytewax does in each epoch that touched the shard: during a storm, all.
    """
    from operators import routing
    from operators.enrichment import EnrichConfig, Pending, ShardEnricher

    found = demo_events(count)
    names = routing.names(64)
    config = EnrichConfig(timeout_seconds=3600.0)
    gc.collect()
    tracemalloc.start()
    shards = {name: ShardEnricher(config) for name in names}
    for shard, items in routing.by_shard(found, names):
        shards[shard].process(items, 0.0)
    compact = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    waiting = sum(shard.pending_count for shard in shards.values())
    compact_pickle = _pickle_cost([shard.snapshot() for shard in shards.values()], waiting)
    del shards
    # Before: each waiting event kept as `Pending(event, ...)` in two deques, the
    # event's objects alive; measured from decoding on, since those were kept.
    gc.collect()
    tracemalloc.start()
    again = demo_events(count)
    graphs: dict[str, deque[Any]] = {}
    fifo: deque[Any] = deque()
    for item in again:
        held = Pending(item, 0.0, 3600.0)
        graphs.setdefault(item.lookup_id, deque()).append(held)
        fifo.append(held)
    del item, held
    graph = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    graph_bytes = (graph - sys.getsizeof(again)) / len(again)
    states = [
        [Pending(cast(Any, item), 0.0, 3600.0) for item in items]
        for _, items in routing.by_shard(again, names)
    ]
    graph_pickle = _pickle_cost(states, len(again))
    return {
        "memory_compact": compact / waiting,
        "memory_graph": graph_bytes,
        "snapshot_bytes_compact": compact_pickle[0],
        "snapshot_us_compact": compact_pickle[1],
        "snapshot_bytes_graph": graph_pickle[0],
        "snapshot_us_graph": graph_pickle[1],
    }


def _pickle_cost(states: list[Any], events: int) -> tuple[float, float]:
    """Pickled bytes and microseconds per event for a snapshot of every shard."""
    started = time.perf_counter()
    size = sum(len(pickle.dumps(state)) for state in states)
    return size / events, (time.perf_counter() - started) * 1e6 / events


def table(runs: list[Run]) -> list[str]:
    hits = runs[0]
    lines = [
        "| run | events | seconds | events/s | ratio to all hits | snapshot bytes per epoch "
        "(median / max) | largest backlog, and the bytes its epoch wrote | bytes written per "
        "event that arrived in the epoch (median) | epochs | recovery store | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for one in runs:
        sizes = sorted(one.bytes_per_epoch) or [0]
        waiting, size = max(
            zip(one.waiting_per_epoch, one.bytes_per_epoch, strict=True), default=(0, 0)
        )
        # In a storm no event leaves before the end, so the backlog's growth is what arrived.
        grown = [
            size / (after - before)
            for before, after, size in zip(
                [0, *one.waiting_per_epoch],
                one.waiting_per_epoch,
                one.bytes_per_epoch,
                strict=False,
            )
            if after > before
        ]
        per_arrival = f"{sorted(grown)[len(grown) // 2]:,.0f} B" if len(grown) > 1 else "-"
        lines.append(
            f"| {one.label} | {one.events:,} | {one.seconds:.1f} | {one.rate:,.0f} | "
            f"{one.rate / hits.rate:.2f} | {sizes[len(sizes) // 2]:,} / {sizes[-1]:,} | "
            f"{waiting:,}, {size:,} B | {per_arrival} | "
            f"{one.epochs} | {one.store_mb:.1f} MB | {one.peak_rss_mb:.0f} MB |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--smoke", action="store_true", help="a tiny run for the test suite")
    parser.add_argument("--json", action="store_true", help="print the runs as JSON too")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="pace the demo (events/s), as a live feed is"
    )
    parser.add_argument(
        "--budget-mb", type=float, default=None, help="ENRICH_MAX_PENDING_MB for both runs"
    )
    args = parser.parse_args()
    events = 3_000 if args.smoke else args.events
    # Paced, so the tiny run spans a few epochs.
    extra = {"ENRICH_DEMO_REFERENCES": "200", "ENRICH_DEMO_RATE": "1000"} if args.smoke else {}
    if args.rate:
        extra["ENRICH_DEMO_RATE"] = str(args.rate)
    if args.budget_mb:
        extra["ENRICH_MAX_PENDING_MB"] = str(args.budget_mb)
    runs = [
        run("all hits", events, storm=False, extra=extra),
        run("storm: every event waits", events, storm=True, extra=extra),
    ]
    print("\n".join(table(runs)))
    # Per event figures settle well below 100,000 events; tracemalloc makes more slow.
    sample = min(events, 100_000)
    cost = per_waiting_event(sample)
    print(
        f"\nPer waiting event ({sample:,} demo events), kept as compact bytes / as object "
        f"graphs (before): memory {cost['memory_compact']:,.0f} B / {cost['memory_graph']:,.0f} B; "
        f"in each epoch's snapshot {cost['snapshot_bytes_compact']:,.0f} B / "
        f"{cost['snapshot_bytes_graph']:,.0f} B, pickled in {cost['snapshot_us_compact']:.2f} µs"
        f" / {cost['snapshot_us_graph']:.2f} µs"
    )
    if args.json:
        print(json.dumps(cost))
        print(json.dumps([{**one.__dict__, "rate": one.rate} for one in runs]))


if __name__ == "__main__":
    main()
