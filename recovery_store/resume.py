"""What Bytewax 0.21 would load if the dataflow were restarted now.

These mirror the queries Bytewax runs on resume, so the report shows the state
a restart gets rather than whatever happens to be newest: a running dataflow
writes snapshots of epochs its workers have not all finished yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from recovery_store.store import Snapshot, Store

FIRST_EPOCH = 1
"""Where Bytewax starts a dataflow that has no execution recorded."""


@dataclass(frozen=True)
class ResumePoint:
    execution: int
    """The number the next execution gets."""
    epoch: int
    """Snapshots of earlier epochs are loaded; later ones are replayed from the sources."""


def resume_point(store: Store) -> ResumePoint:
    """Each worker of the last execution reached its highest frontier; the slowest one wins."""
    if not store.executions:
        return ResumePoint(0, FIRST_EPOCH)
    last = store.executions[-1]
    reached = dict.fromkeys(range(last.worker_count), last.resume_epoch)
    for front in store.frontiers:
        if front.ex_num == last.ex_num:
            reached[front.worker_index] = max(reached.get(front.worker_index, 0), front.epoch)
    return ResumePoint(last.ex_num + 1, min(reached.values()))


def resume_snapshots(store: Store, point: ResumePoint) -> list[Snapshot]:
    """The newest snapshot of each state key before the resume epoch, discards included."""
    newest: dict[tuple[str, str], Snapshot] = {}
    for snap in store.snapshots:
        if snap.epoch < point.epoch:
            held = newest.get((snap.step_id, snap.state_key))
            if held is None or snap.epoch > held.epoch:
                newest[snap.step_id, snap.state_key] = snap
    return sorted(newest.values(), key=lambda snap: (snap.step_id, snap.state_key))


def resume_problems(store: Store, point: ResumePoint) -> list[str]:
    """Why Bytewax would refuse to resume from this store; empty when it would not."""
    problems: list[str] = []
    counts = sorted({part.count for part in store.partitions})
    if len(counts) > 1:
        problems.append(f"partitions disagree on how many there are: {counts}")
    indexes = [part.index for part in store.partitions]
    twice = sorted({index for index in indexes if indexes.count(index) > 1})
    if twice:
        problems.append(f"partition indexes found in more than one file: {twice}")
    missing = sorted(set(range(max(counts))) - set(indexes))
    if missing:
        problems.append(f"partitions {missing} of {max(counts)} are missing")
    ahead = [commit.part_index for commit in store.commits if commit.epoch > point.epoch]
    if ahead:
        problems.append(
            f"partitions {ahead} were garbage-collected past the resume epoch {point.epoch}, "
            "so the others are older backups: restore one consistent backup of all of them"
        )
    return problems
