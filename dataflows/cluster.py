"""Start one pod of a StatefulSet as one process of a Bytewax cluster.

A StatefulSet pod's name ends in its ordinal (`enrich-2`) and every peer has a
stable DNS name under the headless Service, so the process id and the peer
addresses follow from the pod name and the replica count alone, with no host
file to generate first.

    python -m dataflows.cluster                  # exec `python -m bytewax.run dataflows.enrich`
    python -m dataflows.cluster init-recovery    # create this pod's recovery partition if absent

The headless Service must have the StatefulSet's name (as in Bytewax's Helm
chart): kustomize renames both together, while a name in an environment
variable would go stale.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from bytewax.recovery import init_db_dir

POD_NAME = "BYTEWAX_POD_NAME"
POD_NAMESPACE = "BYTEWAX_POD_NAMESPACE"
REPLICAS = "BYTEWAX_REPLICAS"
CLUSTER_DOMAIN = "BYTEWAX_CLUSTER_DOMAIN"
RECOVERY_DIRECTORY = "BYTEWAX_RECOVERY_DIRECTORY"
RECOVERY_PARTS = "BYTEWAX_RECOVERY_PARTS"

PEER_PORT = 9999
"""Port every process listens on for its peers; the manifests expose the same."""
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
DATAFLOW = "dataflows.enrich"

_POD_NAME = re.compile(r"(?P<statefulset>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-(?P<ordinal>0|[1-9][0-9]*)")


class ClusterError(ValueError):
    """Start-up refused because of a bad variable; the message names it."""


@dataclass(frozen=True)
class Pod:
    """Where one pod sits in its StatefulSet."""

    statefulset: str
    ordinal: int


def parse_pod_name(name: str) -> Pod:
    """`enrich-2` → StatefulSet `enrich`, ordinal 2."""
    match = _POD_NAME.fullmatch(name)
    if match is None:
        raise ClusterError(
            f"{POD_NAME}: {name!r} is not a StatefulSet pod name "
            "(<statefulset>-<ordinal>, for example enrich-2)"
        )
    return Pod(match["statefulset"], int(match["ordinal"]))


def parse_count(name: str, value: str) -> int:
    """A positive whole number from variable `name`."""
    if not value.isdecimal() or int(value) < 1:
        raise ClusterError(f"{name}: {value!r} is not a positive whole number")
    return int(value)


def process_id(pod: Pod, replicas: int) -> int:
    """The pod's ordinal, refused when the StatefulSet has more pods than the cluster."""
    if pod.ordinal >= replicas:
        raise ClusterError(
            f"{REPLICAS}: pod ordinal {pod.ordinal} is outside a cluster of {replicas} "
            f"processes; set {REPLICAS} to the StatefulSet's spec.replicas"
        )
    return pod.ordinal


def peer_addresses(statefulset: str, replicas: int, namespace: str, domain: str) -> list[str]:
    """Every process's address, in process-id order.

    Fully qualified, because the kubelet writes the pod's own FQDN into
    /etc/hosts: a process can bind its own address before DNS publishes it.
    """
    return [
        f"{statefulset}-{index}.{statefulset}.{namespace}.svc.{domain}:{PEER_PORT}"
        for index in range(replicas)
    ]


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ClusterError(f"{name}: not set")
    return value


def cluster_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The `BYTEWAX_PROCESS_ID` and `BYTEWAX_ADDRESSES` that `bytewax.run` reads."""
    pod = parse_pod_name(_required(environ, POD_NAME))
    replicas = parse_count(REPLICAS, _required(environ, REPLICAS))
    addresses = peer_addresses(
        pod.statefulset,
        replicas,
        _required(environ, POD_NAMESPACE),
        environ.get(CLUSTER_DOMAIN, "").strip() or DEFAULT_CLUSTER_DOMAIN,
    )
    return {
        "BYTEWAX_PROCESS_ID": str(process_id(pod, replicas)),
        "BYTEWAX_ADDRESSES": ";".join(addresses),
    }


def partition_path(directory: Path, index: int) -> Path:
    return directory / f"part-{index}.sqlite3"


def init_recovery(directory: Path, pod: Pod, parts: int) -> Path | None:
    """Create this pod's one recovery partition unless it exists; return it if created.

    Pod N holds partition N of `parts`, so partitions on per-pod volumes form
    one complete set, and pods sharing one volume never race on the same file.
    Pods with an ordinal of `parts` or more hold none, so scaling up later
    needs no new partition; they still get the directory, without which
    Bytewax fails the whole cluster. The partition appears by an atomic
    rename, so a crash mid-way leaves nothing half made.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # see recovery_store.trust
    target = partition_path(directory, pod.ordinal)
    if pod.ordinal >= parts or target.exists():
        return None
    staging = directory / f".init-{pod.ordinal}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    init_db_dir(staging, parts)
    partition_path(staging, pod.ordinal).rename(target)
    shutil.rmtree(staging)
    return target


def _init_recovery(environ: Mapping[str, str]) -> str:
    pod = parse_pod_name(_required(environ, POD_NAME))
    parts = parse_count(RECOVERY_PARTS, _required(environ, RECOVERY_PARTS))
    directory = Path(_required(environ, RECOVERY_DIRECTORY))
    created = init_recovery(directory, pod, parts)
    if created is not None:
        return f"created recovery partition {created}"
    if pod.ordinal >= parts:
        return f"pod ordinal {pod.ordinal} holds no recovery partition ({RECOVERY_PARTS}={parts})"
    return f"recovery partition {partition_path(directory, pod.ordinal)} exists"


def _run(environ: Mapping[str, str]) -> NoReturn:
    env = {**environ, **cluster_env(environ)}
    os.execve(sys.executable, [sys.executable, "-m", "bytewax.run", DATAFLOW], env)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dataflows.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", choices=("run", "init-recovery"), default="run")
    command = parser.parse_args(argv).command
    try:
        if command == "init-recovery":
            print(_init_recovery(os.environ), file=sys.stderr)
        else:
            _run(os.environ)
    except ClusterError as exc:
        print(f"invalid cluster settings:\n  {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
