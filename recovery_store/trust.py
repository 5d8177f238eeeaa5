"""Whether a recovery store may be trusted, judged by its owner and mode bits, as ssh judges keys.

Bytewax resumes by unpickling the store's snapshots with plain `pickle`, so
whoever can write the directory or one of its files can run code in the
dataflow. A store is trusted only when the directory and every SQLite file in
it (partitions and their `-wal`/`-shm`/`-journal` companions) belong to the
user running the check (or to root, who can write anything anyway) and are
writable by nobody else (but a group trusted explicitly), and when each of
those files is a regular file, so that opening it can neither hang (a FIFO)
nor loop (a symlink cycle).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

TRUSTED_GROUP_VARIABLE = "ENRICH_RECOVERY_TRUSTED_GROUP"
"""The setting naming a group that may write the store (the dataflow's and the inspector's)."""
STORE_FILE_GLOB = "*.sqlite3*"
"""Partitions (`part-N.sqlite3`) and the files SQLite keeps beside them."""
ROOT_UID = 0


class UntrustedStore(Exception):
    """The store must not be opened; the message names each path, the problem and the fix."""


@dataclass(frozen=True)
class Finding:
    path: Path
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}; fix: {self.fix}"


def _owner_and_mode(path: Path, info: os.stat_result, trusted_group: int | None) -> list[Finding]:
    found: list[Finding] = []
    euid = os.geteuid()
    if info.st_uid not in (euid, ROOT_UID):
        found.append(
            Finding(
                path,
                f"owned by uid {info.st_uid}, not by this process's user (uid {euid})",
                f"chown {euid} {path} (as root), or run as its owner",
            )
        )
    group_ok = trusted_group is not None and info.st_gid == trusted_group
    writers = [
        who
        for who, bit, trusted in (
            ("group", stat.S_IWGRP, group_ok),
            ("others", stat.S_IWOTH, False),
        )
        if info.st_mode & bit and not trusted
    ]
    if writers:
        found.append(
            Finding(
                path,
                f"writable by {' and '.join(writers)} (mode {stat.filemode(info.st_mode)}, "
                f"group {info.st_gid})",
                f"chmod go-w {path}"
                + (
                    ""
                    if "others" in writers
                    else f", or {TRUSTED_GROUP_VARIABLE}={info.st_gid} if only this dataflow's "
                    "processes are in that group (a Kubernetes fsGroup)"
                ),
            )
        )
    return found


def _check_file(path: Path, trusted_group: int | None) -> list[Finding]:
    try:
        info = path.stat()
    except OSError as exc:
        # A dangling link or a symlink cycle: stat says which (ELOOP, ENOENT).
        return [Finding(path, f"cannot be checked: {exc.strerror}", f"remove or replace {path}")]
    if not stat.S_ISREG(info.st_mode):
        return [Finding(path, "is not a regular file", f"remove {path}: a store holds only files")]
    return _owner_and_mode(path, info, trusted_group)


def findings(directory: Path, trusted_group: int | None = None) -> list[Finding]:
    """Everything that makes `directory` untrustworthy; empty when it may be opened.

    `trusted_group` is a group id whose members may write the store: a
    Kubernetes `fsGroup` makes a volume group-writable by the pod's own group.
    A missing directory has no findings: whoever opens it says it is missing.
    """
    try:
        info = directory.stat()
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [Finding(directory, f"cannot be checked: {exc.strerror}", "use a real directory")]
    if not stat.S_ISDIR(info.st_mode):
        return []
    found = _owner_and_mode(directory, info, trusted_group)
    for path in sorted(directory.glob(STORE_FILE_GLOB)):
        found.extend(_check_file(path, trusted_group))
    return found


def check(directory: Path, trusted_group: int | None = None) -> None:
    """Raise `UntrustedStore` naming every problem, so none has to be fixed twice."""
    found = findings(directory, trusted_group)
    if found:
        lines = "\n".join(f"  {finding}" for finding in found)
        raise UntrustedStore(
            f"refusing the recovery store {directory}: Bytewax unpickles its snapshots, so "
            f"anyone who can write it can run code in this process.\n{lines}"
        )
