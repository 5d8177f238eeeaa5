"""A waiting event as one compact bytes object: how it sits in memory and in snapshots.

During a miss storm every event waits, and Bytewax re-pickles a shard's whole
state in every epoch the shard changed. As an object graph (`Pending`,
`Event`, its `fields` dict, its strings) a waiting event took about 580 B of
memory, which the garbage collector kept rescanning, and 3 µs to pickle in
every epoch. As one `bytes` object it takes about 200 B, is invisible to the
collector and pickles as a copy in 0.1 µs (docs/BENCHMARKS.md, "Miss storms").

Layout: arrival and deadline as two little-endian doubles (a held event's
deadline is `HELD`, infinity), then the event as a pickle of plain values
only: its enums travel as their strings, so the pickle names no global and
is read back by an unpickler that refuses every global. The pickle's
protocol and first frame headers are left out, being the same in every
event. Pickle rather than JSON: six times faster to write, twice to read,
and a string the event holds twice (its id in its fields) is stored once.
"""

from __future__ import annotations

import io
import pickle
import struct
from collections.abc import Callable
from typing import Any

from operators.records import Event, MissReason, Outcome, Status

_TIMES = struct.Struct("<dd")
_BODY_AT = _TIMES.size
_deadline_of = struct.Struct("<8xd").unpack_from
_arrived_of = struct.Struct("<d").unpack_from
_dumps = pickle.dumps
_FRAME_OP = pickle.FRAME[0]
_new = tuple.__new__
Loads = Callable[[bytes], Any]

OVERHEAD_BYTES = 49
"""Memory a waiting event takes beyond its encoding: the bytes object's header
(33 B) and its slots in the key's queue and the shard's deadline queue (8 B each)."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"a waiting event never names a global ({module}.{name})")


def encode(event: Event, arrived: float, deadline: float) -> bytes:
    # Plain strings instead of the enums: no global in the pickle.
    stages = tuple(
        (lookup, str(status), None if reason is None else str(reason), waited_ms, version)
        for lookup, status, reason, waited_ms, version in event.stages or ()
    )
    body = (
        event.event_id,
        event.lookup_id,
        event.event_time,
        event.fields,
        event.origin,
        stages,
        event.seq,
    )
    pickled = _dumps(body, 5)
    # Protocol and frame headers are the same in every event: 11 bytes saved each.
    skip = 11 if pickled[2] == _FRAME_OP else 2
    return _TIMES.pack(arrived, deadline) + memoryview(pickled)[skip:]


def decode(blob: bytes, loads: Loads = pickle.loads) -> tuple[Event, float, float]:
    """The event, its arrival and its deadline.

    The dataflow decodes its own snapshots, which Bytewax has just unpickled
    with plain `pickle.loads`, so the nested pickle is no less trusted and
    plain `loads` is four times faster. Anything reading a store it was
    handed passes `loads_untrusted`.
    """
    arrived, deadline = _TIMES.unpack_from(blob)
    body = loads(blob[_BODY_AT:])
    if len(body) == 6:  # encoded by a version without `seq`: older than any copy since
        body = (*body, 0)
    event_id, lookup_id, event_time, fields, origin, stages, seq = body
    if stages:
        stages = tuple(_outcome(*stage) for stage in stages)
    event = _new(Event, (event_id, lookup_id, event_time, fields, origin, stages, seq))
    return event, arrived, deadline


def loads_untrusted(data: bytes) -> Any:
    """Like `pickle.loads`, refusing every global: a waiting event never names one."""
    return _PlainUnpickler(io.BytesIO(data)).load()


def _outcome(
    lookup: str, status: str, reason: str | None, waited_ms: float, version: Any
) -> Outcome:
    miss_reason = None if reason is None else MissReason(reason)
    return Outcome(lookup, Status(status), miss_reason, waited_ms, version)


def size(blob: bytes) -> int:
    """Memory one waiting event takes, for the memory budget."""
    return len(blob) + OVERHEAD_BYTES


def deadline(blob: bytes) -> float:
    return _deadline_of(blob)[0]


def arrived(blob: bytes) -> float:
    return _arrived_of(blob)[0]


def lookup_id(blob: bytes) -> str:
    """The key a waiting event waits for; only on the paths where it leaves."""
    return decode(blob)[0].lookup_id
