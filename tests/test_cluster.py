"""A StatefulSet pod becomes the right Bytewax process, and holds the right recovery partition."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from dataflows import cluster
from dataflows.cluster import ClusterError, Pod

ROOT = Path(__file__).resolve().parents[1]

ENVIRON = {
    "BYTEWAX_POD_NAME": "enrich-2",
    "BYTEWAX_POD_NAMESPACE": "prod",
    "BYTEWAX_REPLICAS": "3",
}


@pytest.mark.parametrize(
    ("name", "pod"),
    [
        ("enrich-0", Pod("enrich", 0)),
        ("enrich-12", Pod("enrich", 12)),
        ("stream-enrich-3", Pod("stream-enrich", 3)),
        ("e2-1", Pod("e2", 1)),
    ],
)
def test_the_ordinal_is_the_last_dash_separated_number(name: str, pod: Pod) -> None:
    assert cluster.parse_pod_name(name) == pod


@pytest.mark.parametrize(
    "name",
    ["enrich", "enrich-", "-1", "enrich-x", "enrich-01", "Enrich-1", "enrich--1", "enrich-1 "],
)
def test_a_name_no_statefulset_gives_is_refused_naming_the_variable(name: str) -> None:
    with pytest.raises(ClusterError, match=r"^BYTEWAX_POD_NAME: .*<statefulset>-<ordinal>"):
        cluster.parse_pod_name(name)


@pytest.mark.parametrize("value", ["0", "-1", "abc", "2.5", "", "³"])
def test_a_count_must_be_a_positive_whole_number(value: str) -> None:
    with pytest.raises(ClusterError, match=r"^BYTEWAX_REPLICAS: .*positive whole number"):
        cluster.parse_count("BYTEWAX_REPLICAS", value)


def test_a_pod_beyond_the_replica_count_is_refused() -> None:
    """What `kubectl scale` without changing BYTEWAX_REPLICAS leads to."""
    assert cluster.process_id(Pod("enrich", 2), 3) == 2
    with pytest.raises(ClusterError, match=r"^BYTEWAX_REPLICAS: pod ordinal 3 .* of 3 processes"):
        cluster.process_id(Pod("enrich", 3), 3)


def test_peers_are_every_pod_under_the_headless_service_in_ordinal_order() -> None:
    assert cluster.peer_addresses("enrich", 3, "prod", "cluster.local") == [
        "enrich-0.enrich.prod.svc.cluster.local:9999",
        "enrich-1.enrich.prod.svc.cluster.local:9999",
        "enrich-2.enrich.prod.svc.cluster.local:9999",
    ]


def test_cluster_env_is_what_bytewax_run_reads() -> None:
    env = cluster.cluster_env(ENVIRON)
    assert env == {
        "BYTEWAX_PROCESS_ID": "2",
        "BYTEWAX_ADDRESSES": "enrich-0.enrich.prod.svc.cluster.local:9999;"
        "enrich-1.enrich.prod.svc.cluster.local:9999;"
        "enrich-2.enrich.prod.svc.cluster.local:9999",
    }
    addresses = env["BYTEWAX_ADDRESSES"].split(";")
    assert addresses[int(env["BYTEWAX_PROCESS_ID"])].startswith("enrich-2.")


def test_a_cluster_domain_other_than_the_default_is_used() -> None:
    env = cluster.cluster_env({**ENVIRON, "BYTEWAX_CLUSTER_DOMAIN": "corp.internal"})
    assert env["BYTEWAX_ADDRESSES"].split(";")[2] == "enrich-2.enrich.prod.svc.corp.internal:9999"


@pytest.mark.parametrize("missing", sorted(ENVIRON))
def test_a_missing_variable_is_named(missing: str) -> None:
    environ = {name: value for name, value in ENVIRON.items() if name != missing}
    with pytest.raises(ClusterError, match=rf"^{missing}: not set"):
        cluster.cluster_env(environ)


def test_run_execs_bytewax_with_the_cluster_env(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []

    def fake_execve(path: str, args: list[str], env: dict[str, str]) -> None:
        calls.append((path, args, env))
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", fake_execve)
    monkeypatch.setattr(os, "environ", {**ENVIRON, "ENRICH_SOURCE": "kafka"})
    with pytest.raises(SystemExit):
        cluster.main([])
    [(path, args, env)] = calls
    assert args == [sys.executable, "-m", "bytewax.run", "dataflows.enrich"]
    assert path == sys.executable
    assert env["BYTEWAX_PROCESS_ID"] == "2"
    assert env["ENRICH_SOURCE"] == "kafka"


def test_a_bad_variable_stops_start_up_with_its_name() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEWAX_")}
    env |= {**ENVIRON, "BYTEWAX_REPLICAS": "two", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "dataflows.cluster"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "BYTEWAX_REPLICAS: 'two' is not a positive whole number" in done.stderr


def _parts_row(path: Path) -> tuple[int, int]:
    with closing(sqlite3.connect(path)) as conn:
        [row] = conn.execute("select part_index, part_count from parts").fetchall()
    return row


def test_each_pod_creates_only_its_own_partition_once(tmp_path: Path) -> None:
    created = cluster.init_recovery(tmp_path, Pod("enrich", 1), 3)
    assert created == tmp_path / "part-1.sqlite3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-1.sqlite3"]
    assert _parts_row(created) == (1, 3)
    before = created.stat().st_mtime_ns
    assert cluster.init_recovery(tmp_path, Pod("enrich", 1), 3) is None
    assert created.stat().st_mtime_ns == before


def test_pods_beyond_the_partition_count_hold_none_in_a_directory_that_exists(
    tmp_path: Path,
) -> None:
    """So scaling up creates no partition twice; Bytewax fails on a missing directory."""
    directory = tmp_path / "recovery"
    assert cluster.init_recovery(directory, Pod("enrich", 3), 3) is None
    assert directory.is_dir()
    assert list(directory.iterdir()) == []


def test_pods_sharing_one_volume_complete_the_set(tmp_path: Path) -> None:
    for ordinal in range(3):
        cluster.init_recovery(tmp_path, Pod("enrich", ordinal), 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"part-{i}.sqlite3" for i in range(3)]
    assert [_parts_row(tmp_path / f"part-{i}.sqlite3") for i in range(3)] == [
        (0, 3),
        (1, 3),
        (2, 3),
    ]


def test_a_leftover_from_a_crashed_init_is_replaced(tmp_path: Path) -> None:
    (tmp_path / ".init-0").mkdir()
    (tmp_path / ".init-0" / "part-0.sqlite3").write_bytes(b"half written")
    cluster.init_recovery(tmp_path, Pod("enrich", 0), 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-0.sqlite3"]
    assert _parts_row(tmp_path / "part-0.sqlite3") == (0, 2)


def test_the_init_command_reads_the_pod_and_partition_count(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEWAX_")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "BYTEWAX_POD_NAME": "enrich-0",
        "BYTEWAX_RECOVERY_PARTS": "2",
        "BYTEWAX_RECOVERY_DIRECTORY": str(tmp_path / "recovery"),
    }
    command = [sys.executable, "-m", "dataflows.cluster", "init-recovery"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    second = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert "created recovery partition" in first.stderr
    assert "exists" in second.stderr
    assert sorted(p.name for p in (tmp_path / "recovery").iterdir()) == ["part-0.sqlite3"]


FLOW = textwrap.dedent(
    """
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource

    flow = Dataflow("count")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(range(20))), lambda x: str(x % 4))
    counts = op.stateful_map("count", keyed, lambda n, _x: ((n or 0) + 1, (n or 0) + 1))
    op.output("out", counts, TestingSink([]))
    """
)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _run_cluster(tmp_path: Path, volumes: list[Path]) -> list[subprocess.CompletedProcess[Any]]:
    addresses = ";".join(f"127.0.0.1:{port}" for port in _free_ports(len(volumes)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEWAX_")}
    env["PYTHONPATH"] = str(tmp_path)
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "bytewax.run", "count_flow"),
                *("-i", str(index), "-a", addresses, "-r", str(volume), "-s", "1", "-b", "0"),
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index, volume in enumerate(volumes)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def test_per_pod_partitions_form_one_set_bytewax_runs_and_scales_up_with(tmp_path: Path) -> None:
    """Each process sees only its own volume, as in the StatefulSet; then a third pod joins."""
    (tmp_path / "count_flow.py").write_text(FLOW)
    volumes = [tmp_path / f"data-enrich-{ordinal}" for ordinal in range(3)]
    for ordinal, volume in enumerate(volumes):
        cluster.init_recovery(volume, Pod("enrich", ordinal), 2)
    for replicas in (2, 3):
        for result in _run_cluster(tmp_path, volumes[:replicas]):
            assert result.returncode == 0, result.stderr
    assert list(volumes[2].iterdir()) == []
    executions = 0
    for ordinal, volume in enumerate(volumes[:2]):
        with closing(sqlite3.connect(volume / f"part-{ordinal}.sqlite3")) as conn:
            executions += conn.execute("select count(*) from exs").fetchone()[0]
            assert conn.execute("select count(*) from snaps").fetchone()[0] > 0
    assert executions == 2
