"""Measures as-of lookups against latest ones: µs per event on hits, bytes per kept version.

    python bench/bench_as_of.py            # about four minutes, half of it the memory table
    python bench/bench_as_of.py --smoke    # tiny sizes, one round: checks it runs

The join (`operators.as_of.AsOfJoin` against the latest mode's
`operators.parking.ParkingJoin`, both built by `new_join` as the dataflow
builds them) is fed pre-built batches of 1,000 events that all hit, over
10,000 keys asked for at random or in turn (`ORDERS`); each contender's
batches are timed whole through `process()`, contenders interleaved, each
keeping its best of several rounds, so a busy host slows all alike and the
ratios hold within one run. The input is frozen out of the garbage collector
and its young threshold set as the job sets it.

Each as-of contender holds versions valid from `T0`, `T0 + STEP`, ... with
events timed after the newest version (the common case: the join's fast
path), spread over the versions' validity (most bisect the history) or all
before the newest (every one bisects). A second table splits the bisect
path into its calls; a third runs the dataflow's whole step (routing, 64
shards, segments, recovery on), as `bench_enrich.py step` does.

Memory is measured with `tracemalloc` in a fresh interpreter per case, rows
decoded from JSON by the real decoder (4 short text columns as the demo's
securities: cusip, name, sector, exchange_id), so every value is a fresh
object as in production; each key's versions arrive in rounds (every key's
first, then every key's second, ...), as versions arrive over time. (With
few keys, the parser's string cache would hand a new version the strings of
its key's previous one, which a version arriving hours later would not get.)
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
import tracemalloc
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_enrich import (  # noqa: E402
    CountSink,
    in_subprocess,
    machine,
    run_with_recovery,
    sharded_flow,
)
from operators import routing  # noqa: E402
from operators.as_of import AsOfJoin, new_join  # noqa: E402
from operators.decode import Decoder, ReferenceSchema  # noqa: E402
from operators.enrichment import EnrichConfig  # noqa: E402
from operators.history import Versions, row_at  # noqa: E402
from operators.parking import ParkingJoin  # noqa: E402
from operators.records import Event, Joined, Kind, RawRecord, RefUpdate, Status  # noqa: E402

BATCH = 1_000
"""Events per `process()` call."""
T0 = 1.7e9
STEP = 100.0
HERE = "bench.bench_as_of"
"""This module, as a fresh interpreter imports it for the memory cases."""
"""Seconds between two versions of a key."""
SECTORS = ["Energy", "Materials", "Industrials", "Utilities", "Health Care", "Financials"]
EXCHANGES = ["XNYS", "XNAS", "XLON", "XTKS", "XPAR"]
LATEST = EnrichConfig(timeout_seconds=3600.0)
AS_OF = replace(LATEST, mode="as_of")
COLUMNS = ("cusip", "name", "sector", "exchange_id")


def security(i: int, k: int) -> tuple[str, str, str, str]:
    """Version `k` of security `i`: its sector changes from one version to the next."""
    return f"{i:09d}", f"Company {i}", SECTORS[(i + k) % len(SECTORS)], EXCHANGES[i % 5]


def key(i: int) -> str:
    return f"SEC{i:07d}"


def versions(keys: int, count: int) -> list[RefUpdate]:
    """`count` versions of each key, every key's first, then every key's second, ..."""
    return [
        RefUpdate(key(i), security(i, k), k + 1, "bench", valid_from=T0 + k * STEP)
        for k in range(count)
        for i in range(keys)
    ]


ORDERS = ("random keys", "keys in turn")
"""Events ask for uniformly random keys, or for each key in turn (key `j % keys`): in
turn, keys are read in the order their state was allocated, which the memory caches
favour; random keys are nearer a real stream, whose keys come in no order."""
FIELDS = {"price": 1.0, "size": 100}
"""One dict shared by every event: the join never reads an event's fields."""


def events(
    count: int, keys: int, low: float, high: float, order: str, seed: int = 1
) -> list[Event]:
    """Events at random times in [low, high), of keys in `order` (`ORDERS`)."""
    rng = random.Random(seed)
    in_turn = order == ORDERS[1]
    return [
        Event(
            f"Q{j}",
            key(j % keys if in_turn else rng.randrange(keys)),
            rng.uniform(low, high),
            FIELDS,
            "bench",
        )
        for j in range(count)
    ]


def expected_version(when: float, kept: int) -> int:
    return min(int((when - T0) // STEP), kept - 1) + 1


class Contender:
    """A join holding `kept` versions per key (latest: one row), and its batches of
    events timed in [low, high), in each order of keys."""

    def __init__(
        self,
        label: str,
        config: EnrichConfig,
        kept: int,
        window: tuple[float, float],
        keys: int,
        count: int,
    ) -> None:
        self.label = label
        self.kept = kept
        self.join = new_join(config)
        self.join.process(versions(keys, kept), 0.0)
        self.batches: dict[str, list[list[Event]]] = {}
        for seed, order in enumerate(ORDERS):
            stream = events(count, keys, *window, order, seed)
            self.batches[order] = [stream[i : i + BATCH] for i in range(0, count, BATCH)]

    def runner(self, order: str) -> Callable[[], None]:
        process, batches = self.join.process, self.batches[order]

        def run() -> None:
            for batch in batches:
                process(batch, 0.0)

        return run

    def check(self) -> None:
        """Every event hits, and joins the version valid at its time (latest: the newest)."""
        latest = not isinstance(self.join, AsOfJoin)
        for batches in self.batches.values():
            for batch in batches:
                for event, out in zip(batch, self.join.process(batch, 0.0), strict=True):
                    assert type(out) is Joined and out.status is Status.ENRICHED, out
                    assert out.event is event
                    when = event.event_time or 0.0
                    wanted = self.kept if latest else expected_version(when, self.kept)
                    assert out.version == wanted, (out.version, wanted, when)
        assert not self.join.parcels and not self.join.pending_count


def contenders(count: int, keys: int) -> list[Contender]:
    newest = T0 + 3 * STEP
    return [
        Contender("latest (`ParkingJoin`)", LATEST, 4, (newest, newest + STEP), keys, count),
        Contender(
            "as_of, 1 version per key, events after it",
            AS_OF,
            1,
            (T0, T0 + STEP),
            keys,
            count,
        ),
        Contender(
            "as_of, 4 versions per key, events after the newest (fast path)",
            AS_OF,
            4,
            (newest, newest + STEP),
            keys,
            count,
        ),
        Contender(
            "as_of, 4 versions per key, events spread over them (3 in 4 bisect)",
            AS_OF,
            4,
            (T0, newest + STEP),
            keys,
            count,
        ),
        Contender(
            "as_of, 4 versions per key, events before the newest (all bisect)",
            AS_OF,
            4,
            (T0, newest),
            keys,
            count,
        ),
    ]


def best_of(runs: dict[Any, Callable[[], object]], rounds: int) -> dict[Any, float]:
    """Seconds per run of each contender, the best of `rounds`, interleaved."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            gc.collect()
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def settle() -> None:
    """Freeze the pre-built input out of the collector; the job's young threshold."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, *gc.get_threshold()[1:])


def join_table(count: int, keys: int, rounds: int) -> list[str]:
    joins = contenders(count, keys)
    for contender in joins:
        contender.check()
    settle()
    runs: dict[Any, Callable[[], object]] = {
        (c.label, order): c.runner(order) for c in joins for order in ORDERS
    }
    best = best_of(runs, rounds)
    heads = " | ".join(f"{order}: µs per event | ratio to latest" for order in ORDERS)
    lines = [f"| join | events | {heads} |", "|---|---|---|---|---|---|"]
    for contender in joins:
        cells = []
        for order in ORDERS:
            seconds = best[contender.label, order]
            base = best[joins[0].label, order]
            cells.append(f"{seconds / count * 1e6:.3f} | {seconds / base:.2f}")
        lines.append(f"| {contender.label} | {count:,} | {' | '.join(cells)} |")
    return lines


def parts_table(count: int, keys: int, rounds: int) -> list[str]:
    """The bisect path's calls, each timed alone over the same events (the loop's cost
    subtracted): where the as-of path's time goes beyond the latest one's."""
    join = new_join(AS_OF)
    join.process(versions(keys, 4), 0.0)
    latest = new_join(LATEST)
    latest.process(versions(keys, 4), 0.0)
    assert isinstance(join, AsOfJoin)
    history, rows = join.history, latest.rows
    runs: dict[Any, Callable[[], object]] = {}
    for seed, order in enumerate(ORDERS):
        stream = events(count, keys, T0, T0 + 3 * STEP, order, seed)
        for name, run in _parts(history, rows, stream).items():
            runs[name, order] = run
    settle()
    best = best_of(runs, rounds)
    empty = "the loop alone (subtracted below)"
    lines = [
        "| part (4 versions, every event bisects) | "
        + " | ".join(f"{order}: ns per event" for order in ORDERS)
        + " |",
        "|---|---|---|",
    ]
    for name in dict.fromkeys(name for name, _ in runs):
        cells = []
        for order in ORDERS:
            seconds = best[name, order]
            net = seconds if name == empty else seconds - best[empty, order]
            cells.append(f"{net / count * 1e9:.0f}")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def _parts(
    history: dict[str, Versions], rows: dict[str, tuple[Any, ...]], stream: list[Event]
) -> dict[str, Callable[[], object]]:
    pairs = [(history[event.lookup_id], event.event_time or 0.0) for event in stream]
    lookups = [(event.lookup_id, event.event_time or 0.0) for event in stream]
    lists = [(v.times, v.rows, when) for v, when in pairs]

    def loop() -> None:
        for _v, _when in pairs:
            pass

    def rows_get() -> None:
        get = rows.get
        for lookup_id, _when in lookups:
            get(lookup_id)

    def history_get() -> None:
        get = history.get
        for lookup_id, _when in lookups:
            get(lookup_id)

    def newest_check() -> None:
        for v, when in pairs:
            if when >= v.times[-1]:
                pass

    def versions_at() -> None:
        at = Versions.at
        for v, when in pairs:
            at(v, when)

    def rows_at() -> None:
        for times, kept, when in lists:
            row_at(times, kept, when)

    def bisect_only() -> None:
        for times, _kept, when in lists:
            bisect_right(times, when)

    return {
        "the loop alone (subtracted below)": loop,
        "latest: `rows.get(lookup_id)`": rows_get,
        "as_of: `history.get(lookup_id)`": history_get,
        "as_of: `when >= versions.times[-1]` (the fast path's test)": newest_check,
        "as_of: `versions.at(when)` (method, `row_at`, `bisect_right`)": versions_at,
        "as_of: `row_at(times, rows, when)` (function, `bisect_right`)": rows_at,
        "as_of: `bisect_right(times, when)` alone": bisect_only,
    }


def step_table(count: int, keys: int, rounds: int) -> list[str]:
    """The dataflow's whole step, as `bench_enrich.py step` runs it, latest against as_of."""
    newest = T0 + 3 * STEP
    updates = versions(keys, 4)
    order = ORDERS[0]
    flows = {
        "latest": (LATEST, updates + events(count, keys, newest, newest + STEP, order)),
        "as_of, events after the newest version (fast path)": (
            AS_OF,
            updates + events(count, keys, newest, newest + STEP, order),
        ),
        "as_of, events spread over the versions (3 in 4 bisect)": (
            AS_OF,
            updates + events(count, keys, T0, newest + STEP, order),
        ),
    }
    # The same flows with the versions only: what loading them and starting costs, so
    # the events' own time is told apart (loading is dearer in the as-of mode).
    only: list[Any] = list(updates)
    loads = {"latest": (LATEST, only), "as_of": (AS_OF, only)}
    best = dict.fromkeys([*flows, *(f"load {name}" for name in loads)], float("inf"))
    for _ in range(rounds):
        for name, (config, items) in flows.items():
            CountSink.seen = 0
            best[name] = min(best[name], run_with_recovery(sharded_flow(items, config, 64)))
            if CountSink.seen != count:
                raise RuntimeError(f"{name}: {CountSink.seen} events out, {count} expected")
        for name, (config, items) in loads.items():
            best[f"load {name}"] = min(
                best[f"load {name}"], run_with_recovery(sharded_flow(items, config, 64))
            )
    base = best["latest"]
    events_base = base - best["load latest"]
    lines = [
        "| whole step | events | seconds | events/s | ratio to latest | seconds less the "
        "load alone | ratio to latest, events only |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in flows:
        seconds = best[name]
        load = best["load latest" if name == "latest" else "load as_of"]
        net = seconds - load
        lines.append(
            f"| {name} | {count:,} | {seconds:.2f} | {count / seconds:,.0f} | "
            f"{seconds / base:.2f} | {net:.2f} | {net / events_base:.2f} |"
        )
    for name in loads:
        lines.append(
            f"| {name}: the versions alone, no event | 0 | {best['load ' + name]:.2f} "
            "| - | - | - | - |"
        )
    return lines


def decoder() -> Decoder:
    schema = ReferenceSchema(
        dict.fromkeys(COLUMNS, "str"), valid_from="field", valid_from_field="valid_from"
    )
    return Decoder(
        lookup_field="security_id",
        event_id_field="event_id",
        event_time_field="ts",
        event_fields={},
        references={"security": schema},
        max_record_bytes=65_536,
    )


def measure_memory(mode: str, keys: int, kept: int) -> list[float]:
    """Bytes held per key by 64 shards' joins given `kept` versions of `keys` keys,
    and the peak while loading; rows decoded from JSON, in chunks dropped after each."""
    decode = decoder().decode
    config = AS_OF if mode == "as_of" else LATEST
    names = routing.names(64)
    joins: dict[str, ParkingJoin] = {name: new_join(config) for name in names}
    gc.collect()
    tracemalloc.start()
    for k in range(kept):
        for start in range(0, keys, 10_000):
            chunk = [
                decode(
                    RawRecord(
                        Kind.REFERENCE, key(i).encode(), _row_json(i, k), "b", lookup="security"
                    )
                )
                for i in range(start, min(start + 10_000, keys))
            ]
            updates = [rec for rec in chunk if type(rec) is RefUpdate]
            if len(updates) != len(chunk):
                raise RuntimeError("the benchmark's reference rows must all decode")
            for shard, items in routing.by_shard(updates, names):
                joins[shard].process(items, 0.0)
            del chunk, updates
    gc.collect()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if mode == "as_of":
        stored = [
            len(v) for j in joins.values() if isinstance(j, AsOfJoin) for v in j.history.values()
        ]
        assert len(stored) == keys and set(stored) == {kept}, set(stored)
    else:
        assert sum(len(j.rows) for j in joins.values()) == keys
    return [held / keys, peak / keys]


def _row_json(i: int, k: int) -> bytes:
    values: dict[str, Any] = dict(zip(COLUMNS, security(i, k), strict=True))
    values |= {"version": k + 1, "valid_from": T0 + k * STEP}
    return json.dumps(values, separators=(",", ":")).encode()


def memory_table(keys: int, depths: tuple[int, ...]) -> list[str]:
    lines = [
        "| mode | keys | versions per key | bytes per key held | peak bytes per key "
        "| bytes per version beyond the first |",
        "|---|---|---|---|---|---|",
    ]
    held, peak = in_subprocess("measure_memory", "latest", keys, 1, module=HERE)
    lines.append(f"| latest | {keys:,} | 1 | {held:,.0f} | {peak:,.0f} | - |")
    first = 0.0
    for kept in (1, *(depth for depth in depths if depth > 1)):
        held, peak = in_subprocess("measure_memory", "as_of", keys, kept, module=HERE)
        first = first or held
        extra = f"{(held - first) / (kept - 1):,.0f}" if kept > 1 else "-"
        lines.append(f"| as_of | {keys:,} | {kept} | {held:,.0f} | {peak:,.0f} | {extra} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--step-events", type=int, default=1_000_000)
    parser.add_argument("--memory-keys", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--step-rounds", type=int, default=3)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, one round: checks it runs"
    )
    args = parser.parse_args()
    depths: tuple[int, ...] = (2, 4, 16)
    if args.smoke:
        args.keys = 100
        args.events, args.step_events, args.memory_keys = 2_000, 2_000, 1_000
        args.rounds = args.step_rounds = 1
        depths = (4,)
    keys = args.keys
    print(f"Machine: {machine()}\n")
    print(
        f"{keys:,} keys, batches of {BATCH:,} events that all hit, best of {args.rounds} "
        "rounds, contenders interleaved:\n"
    )
    print("\n".join(join_table(args.events, keys, args.rounds)), end="\n\n", flush=True)
    print("\n".join(parts_table(args.events, keys, args.rounds)), end="\n\n", flush=True)
    print(
        f"The whole step: {keys:,} keys (4 versions each, loaded first), random keys, "
        f"64 shards, 1 worker, recovery on, best of {args.step_rounds}:\n"
    )
    print("\n".join(step_table(args.step_events, keys, args.step_rounds)), end="\n\n", flush=True)
    print(f"Memory: rows of {len(COLUMNS)} text columns ({', '.join(COLUMNS)}) and a version:\n")
    print("\n".join(memory_table(args.memory_keys, depths)))


if __name__ == "__main__":
    main()
