"""How a run ends: SIGINT and SIGTERM stop it at once, print the summary and exit 0, no
traceback; a Kafka fault, or an error that carries a note for the operator, ends it with
that sentence, exit 1.

Bytewax has no graceful stop: a signal raises inside whatever step runs,
which ends in a traceback and a Rust panic. Stopping here is a deliberate
end instead: what the sinks committed stays (every sink commits or fsyncs
before its batch returns), nothing half-written is taken as done, and a run
with a recovery store resumes from its last snapshot, as after any crash.
Without one, events still waiting for their reference row are not written.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType

from sources.kafka_errors import KafkaFault

log = logging.getLogger("enrich")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOPPED_EXIT = 0
"""A requested stop is a success, as the reference publisher's SIGTERM is."""


def stop_on_signals(finish: Callable[[], None], recovery: bool | None) -> None:
    """On SIGINT or SIGTERM: log why, run `finish` (the summary), exit `STOPPED_EXIT`.

    A second signal while finishing exits at once.
    """
    stopping = False
    after = (
        "the next run with the same -r directory resumes from the last snapshot"
        if recovery
        else "events still waiting for their reference row were not written; "
        "run with -r to resume after a stop instead"
        if recovery is False
        else "with a recovery store (-r) the next run resumes from the last snapshot"
    )

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            os._exit(STOPPED_EXIT)
        stopping = True
        name = signal.Signals(signum).name
        log.warning("stopping on %s: committed output is kept; %s", name, after)
        try:
            finish()
        finally:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            # Not sys.exit: raised inside a running step, Bytewax would turn it into a panic.
            os._exit(STOPPED_EXIT)

    for signum in STOP_SIGNALS:
        signal.signal(signum, stop)


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """An exception and its causes and contexts, outermost first, each once.

    Bytewax wraps an exception raised in a source, a sink or while building
    one in its own runtime errors, so what the operator needs is found by
    walking the chain, not by the outer type.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        yield exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__


def fault_in(exc: BaseException | None) -> KafkaFault | None:
    """The first `KafkaFault` in an exception's chain of causes and contexts."""
    return next((link for link in _chain(exc) if isinstance(link, KafkaFault)), None)


def noted_in(exc: BaseException | None) -> Exception | None:
    """The first error in the chain that carries notes for the operator."""
    return next(
        (
            link
            for link in _chain(exc)
            if isinstance(link, Exception) and getattr(link, "__notes__", None)
        ),
        None,
    )


def explain_stopping_errors() -> None:
    """An uncaught error that ends the run for a reason an operator can act on is
    printed as a sentence, exit 1; the traceback goes to the log at DEBUG.

    Two kinds: a Kafka fault (a lost offset, a changed topic: its message says
    what failed and what to do), and an error that carries notes (a permanent
    sink error says what a restart does). Every other error keeps Python's
    traceback: it is a bug, and the traceback is what a developer needs.
    """
    default = sys.excepthook

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        fault = fault_in(exc)
        noted = noted_in(exc)
        if fault is None and noted is None:
            default(kind, exc, tb)
            return
        log.debug("the error's traceback:\n%s", "".join(traceback.format_exception(exc)))
        if fault is not None:
            print(f"dataflow stopped: {fault}", file=sys.stderr, flush=True)
        elif noted is not None:
            print(
                f"enrich: stopped: {type(noted).__name__}: {noted}",
                *noted.__notes__,
                sep="\n",
                file=sys.stderr,
            )

    sys.excepthook = hook
