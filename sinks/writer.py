"""Sink writes on a thread beside the worker's, one batch in flight per partition.

The database's own work (SQLite's steps and commits, Oracle's round trips)
runs without the GIL, so while one batch commits the worker goes on reading,
decoding and joining the next. Nothing is written out of order or lost: a
partition's next batch waits for its previous one, and `Flight.wait`, which
the partition calls from `snapshot` (Bytewax calls it when an epoch closes,
before it records the epoch as done) and from `close`, waits for the batch
in flight. A failure in the writer is raised by the partition's next call,
so it stops the dataflow as a failure in `write_batch` did.

Writer threads are daemons: a retry that waits for the database cannot keep
the process from exiting, and an uncommitted transaction is simply lost,
which the resume replays.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

Job = Callable[[], Any]


class Lane:
    """One writer thread; the partitions given the same lane write one after the other."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Job]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((future, job))
        return future

    def _run(self) -> None:
        while True:
            future, job = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to the partition, which raises it
                future.set_exception(exc)


class Flight:
    """A partition's batch in flight on its lane, at most one."""

    def __init__(self, lane: Lane) -> None:
        self._lane = lane
        self._pending: Future[Any] | None = None

    def submit(self, job: Job) -> None:
        """Start `job` once the batch before it is written; raises that batch's failure."""
        self.wait()
        self._pending = self._lane.submit(job)

    def wait(self) -> None:
        """Return once nothing is in flight; raises the failure of what was."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()


class Lanes:
    """Writer threads of one sink in one process: one per database that takes one writer at a
    time (SQLite: its partitions would only queue on the file's lock), else one per partition."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._lock = threading.Lock()
        self._lanes: dict[str, Lane] = {}

    def lane(self, partition: str, shared: bool) -> Lane:
        name = f"{self._prefix}-{'all' if shared else partition}"
        with self._lock:  # worker threads build their partitions at the same time
            lane = self._lanes.get(name)
            if lane is None:
                lane = self._lanes[name] = Lane(name)
            return lane
