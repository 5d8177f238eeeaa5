"""A Kafka fault that stops a running dataflow ends it with its message, not a traceback.

Bytewax wraps an exception raised in a source in its own runtime error and
lets it reach the interpreter; the hook finds a `KafkaFault` in that chain and
prints only its message (which names what failed and what to do). The
process still exits with status 1; every other exception keeps its traceback.
"""

from __future__ import annotations

import sys
from types import TracebackType

from sources.kafka_errors import KafkaFault

_default_hook = sys.excepthook


def fault_in(exc: BaseException | None) -> KafkaFault | None:
    """The first `KafkaFault` in an exception's chain of causes and contexts."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KafkaFault):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _hook(kind: type[BaseException], exc: BaseException, trace: TracebackType | None) -> None:
    fault = fault_in(exc)
    if fault is None:
        _default_hook(kind, exc, trace)
        return
    print(f"dataflow stopped: {fault}", file=sys.stderr, flush=True)


def install() -> None:
    """Print a Kafka fault that ends the process as its message only."""
    sys.excepthook = _hook
