"""Measures decoding alone: µs per record, the product's paths and the alternatives tried.

    python bench/bench_decode.py           # 100,000 demo events, about half a minute
    python bench/bench_decode.py --smoke   # tiny sizes: that it runs, for the tests

Records come from the demo plan (`sources.demo`): quotes as the demo and
`bench_kafka.py` produce them, with the plan's reference rows, late rows and
malformed records in place. Each contender decodes the same records in batches
of 1,000 that are dropped after each batch, as the dataflow does; contenders
are interleaved and each keeps its best of several rounds, so a busy machine
slows all alike. The checked path alone (`fast_path=False`) is how every
event was decoded before the fast path, so its row is the "before".
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
from pydantic_core import from_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_enrich import machine  # noqa: E402
from dataflows.flow import decoder  # noqa: E402
from dataflows.settings import Settings  # noqa: E402
from operators.decode import Decoder, decode_batch  # noqa: E402
from operators.fast_events import MAX_DEPTH, FastDecode, fast_events, text_time  # noqa: E402
from operators.limits import MAX_INT, MAX_TEXT, MAX_TIME, MIN_INT, MIN_TIME  # noqa: E402
from operators.records import Event, Kind, RawRecord  # noqa: E402
from sources.demo import DemoConfig, build_plan  # noqa: E402

BATCH = 1_000
_TS = re.compile(rb'"ts": ([0-9.]+)')
_PRICE = re.compile(rb'"price": ([0-9.]+)')


def demo_records(events: int) -> list[RawRecord]:
    """The demo plan's records in one partition, as a Kafka source hands them over."""
    plan = build_plan(DemoConfig(events=events, references=max(events // 20, 10), partitions=1))
    return [
        RawRecord(kind, key, value, f"demo/0/{i}", lookup="" if kind is Kind.EVENT else "security")
        for i, (kind, key, value) in enumerate(plan.partitions[0])
    ]


def with_text_times(records: list[RawRecord]) -> list[RawRecord]:
    """The same records with each event time as ISO 8601 text, as many feeds send it."""

    def iso(match: re.Match[bytes]) -> bytes:
        when = datetime.fromtimestamp(float(match.group(1)), UTC)
        return b'"ts": "' + when.isoformat().encode() + b'"'

    return [raw._replace(value=_TS.sub(iso, raw.value or b"")) for raw in records]


def with_prices_as_text(records: list[RawRecord]) -> list[RawRecord]:
    """The same records with each price as text (`"339.63"`), as some producers send decimals."""
    return [raw._replace(value=_PRICE.sub(rb'"price": "\1"', raw.value or b"")) for raw in records]


def struct_decoder(decoder: Decoder) -> FastDecode:
    """Tried and not kept: the fast path with a msgspec Struct generated from the settings.

    The Struct checks the lookup id, event id, time and declared fields in C,
    bounded as the checked path bounds them; the document is then parsed again
    as a whole, since an event keeps every field. It passed the same tests as
    the kept fast path and measured no faster: the second parse costs what
    the Python checks it replaces cost.
    """
    ints = Annotated[int, msgspec.Meta(ge=MIN_INT, le=MAX_INT)]
    ids = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)] | ints
    declared: dict[str, Any] = {
        "str": Annotated[str, msgspec.Meta(max_length=MAX_TEXT)],
        "int": ints,
        "float": float,
        "bool": bool,
    }
    names = {
        "lookup_id": decoder.lookup_field,
        "event_id": decoder.event_id_field,
        "event_time": decoder.event_time_field,
    }
    members: list[Any] = [
        ("lookup_id", ids),
        ("event_id", ids | None, None),
        ("event_time", Annotated[float, msgspec.Meta(ge=MIN_TIME, le=MAX_TIME)] | str | None, None),
    ]
    floats = []
    for number, (name, kind) in enumerate(decoder.event_fields.items()):
        names[f"declared_{number}"] = name
        members.append(
            (f"declared_{number}", declared[kind] | None | msgspec.UnsetType, msgspec.UNSET)
        )
        if kind == "float":
            floats.append((name, f"declared_{number}"))
    check = msgspec.json.Decoder(msgspec.defstruct("KnownFields", members, rename=names)).decode
    parse = msgspec.json.Decoder().decode
    new = tuple.__new__

    def decode(value: bytes | None, origin: str, seq: int) -> Event | None:
        if value is None or len(value) > decoder.max_record_bytes:
            return None
        if len(value) > 2 * MAX_DEPTH and value.count(b"{") + value.count(b"[") > MAX_DEPTH:
            return None
        try:
            known: Any = check(value)
            obj = parse(value)
        except ValueError:
            return None
        lookup_id = known.lookup_id
        if type(lookup_id) is int:
            lookup_id = str(lookup_id)
        event_id = known.event_id
        if event_id is None:
            event_id = origin
        elif type(event_id) is int:
            event_id = str(event_id)
        event_time = known.event_time
        if type(event_time) is str:
            event_time = text_time(event_time)
            if event_time is None:
                return None
        for name, attribute in floats:
            number = getattr(known, attribute)
            if type(number) is float:
                obj[name] = number
        return new(Event, (event_id, lookup_id, event_time, obj, origin, (), seq))

    return decode


def per_batch(records: list[Any], work: Callable[[list[Any]], object]) -> Callable[[], None]:
    def run() -> None:
        for start in range(0, len(records), BATCH):
            work(records[start : start + BATCH])

    return run


def best_of(contenders: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Seconds per run of each contender, the best of `rounds`, interleaved."""
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(rounds):
        for name, run in contenders.items():
            gc.collect()
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def decode_table(records: list[RawRecord], rounds: int) -> list[str]:
    product = decoder(Settings())
    checked = dataclasses.replace(product, fast_path=False)
    text_times = with_text_times(records)
    text_prices = with_prices_as_text(records)
    quotes = [raw for raw in records if raw.kind is Kind.EVENT and raw.value]
    parsed = [raw for raw in quotes if _parses(raw.value)]
    values = [raw.value for raw in parsed]
    struct = struct_decoder(product)
    fast = fast_events(
        product.lookup_field,
        product.event_id_field,
        product.event_time_field,
        product.event_fields,
        product.max_record_bytes,
    )
    assert fast is not None
    for raw in [*parsed, *text_times]:  # the tried variant decodes alike, or it proves nothing
        assert struct(raw.value, raw.origin, 0) == fast(raw.value, raw.origin, 0), raw
    rows: dict[str, tuple[int, Callable[[], None]]] = {
        "demo records, fast path (product)": (
            len(records),
            per_batch(records, lambda b: decode_batch(product, "security", b)),
        ),
        "demo records, checked path only (before)": (
            len(records),
            per_batch(records, lambda b: decode_batch(checked, "security", b)),
        ),
        "text times, fast path (product)": (
            len(text_times),
            per_batch(text_times, lambda b: decode_batch(product, "security", b)),
        ),
        "text times, checked path only (before)": (
            len(text_times),
            per_batch(text_times, lambda b: decode_batch(checked, "security", b)),
        ),
        "prices as text, fast path (product)": (
            len(text_prices),
            per_batch(text_prices, lambda b: decode_batch(product, "security", b)),
        ),
        "prices as text, checked path only (before)": (
            len(text_prices),
            per_batch(text_prices, lambda b: decode_batch(checked, "security", b)),
        ),
        "well-formed quotes, fast path (product)": (
            len(parsed),
            per_batch(parsed, lambda b: decode_batch(product, "security", b)),
        ),
        "well-formed quotes, checked path only (before)": (
            len(parsed),
            per_batch(parsed, lambda b: decode_batch(checked, "security", b)),
        ),
        "well-formed quotes, fast path alone, no batch loop (product)": (
            len(parsed),
            per_batch(parsed, lambda b: [fast(r.value, r.origin, 0) for r in b]),
        ),
        "well-formed quotes, generated msgspec Struct, no batch loop (tried)": (
            len(parsed),
            per_batch(parsed, lambda b: [struct(r.value, r.origin, 0) for r in b]),
        ),
        "parse only: json.loads": (len(values), per_batch(values, _each(json.loads))),
        "parse only: pydantic_core.from_json": (
            len(values),
            per_batch(values, _each(lambda v: from_json(v, allow_inf_nan=False))),
        ),
        "parse only: msgspec (kept)": (
            len(values),
            per_batch(values, _each(msgspec.json.Decoder().decode)),
        ),
    }
    try:
        import orjson

        rows["parse only: orjson.loads"] = (len(values), per_batch(values, _each(orjson.loads)))
    except ImportError:  # not a dependency: a row of its own when installed
        pass
    best = best_of({name: run for name, (_, run) in rows.items()}, rounds)
    before = {name: best[name] / rows[name][0] for name in rows if name.endswith("(before)")}
    lines = [
        "| contender | records | µs per record | records/s | speed-up |",
        "|---|---|---|---|---|",
    ]
    for name, (count, _) in rows.items():
        micros = best[name] / count * 1e6
        base = before.get(name.split(",", 1)[0] + ", checked path only (before)")
        ratio = f"{base * 1e6 / micros:.2f}" if base and "," in name else "-"
        lines.append(f"| {name} | {count:,} | {micros:.2f} | {count / best[name]:,.0f} | {ratio} |")
    return lines


def event_table(rounds: int, count: int) -> list[str]:
    """What building the `Event` record costs, by how it is built."""
    fields: dict[str, Any] = {"security_id": "S"}
    new = tuple.__new__

    def building(make: Callable[[int], Event]) -> Callable[[], None]:
        def run() -> None:
            for i in range(count):
                make(i)

        return run

    ways = {
        "Event(...) (NamedTuple constructor)": building(
            lambda i: Event("e", "S", 1.0, fields, "o", (), i)
        ),
        "Event._make((...))": building(lambda i: Event._make(("e", "S", 1.0, fields, "o", (), i))),
        "tuple.__new__(Event, (...)) (kept)": building(
            lambda i: new(Event, ("e", "S", 1.0, fields, "o", (), i))
        ),
    }
    best = best_of(ways, rounds)
    lines = ["| building an Event | ns per event |", "|---|---|"]
    lines += [f"| {name} | {best[name] / count * 1e9:.0f} |" for name in ways]
    return lines


def _parses(value: bytes | None) -> bool:
    try:
        return value is not None and type(json.loads(value)) is dict
    except ValueError:
        return False


def _each(parse: Callable[[bytes], object]) -> Callable[[list[bytes]], object]:
    return lambda batch: [parse(value) for value in batch]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks it runs, measures nothing"
    )
    args = parser.parse_args()
    events, rounds = (2_000, 1) if args.smoke else (args.events, args.rounds)
    records = demo_records(events)
    print(f"{machine()}; {len(records):,} demo records, best of {rounds}:\n")
    print("\n".join(decode_table(records, rounds)))
    print()
    print("\n".join(event_table(rounds, min(events, 100_000))))


if __name__ == "__main__":
    main()
