"""Deployment files: valid Kubernetes, consistent with each other and with the settings.

Offline checks only. Core objects are validated strictly (unknown fields
refused) against the schemas `kubernetes-validate` bundles. The ServiceMonitor
is a CRD with no bundled schema, so its wiring is checked field by field
against the Service and pods it must reach. Bytewax's Helm chart cannot be
rendered without helm, so the waxctl values are checked against the keys chart
0.8.1 reads, and their Kubernetes-typed parts are validated inside the
StatefulSet and claim that chart builds from them, shaped the way it does.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from commands import cli
from config import environment
from config.base import SettingsError
from dataflows import cluster
from dataflows.settings import PROGRAM_SETTINGS, Settings, check_dataflow, load_settings
from reference.settings import PublisherSettings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
K8S_VERSIONS = ("1.29", kubernetes_validate.latest_version())
"""The oldest version the manifests target (CronJob time zones, PVC retention) and the newest."""

CREDENTIALS = frozenset(
    {
        "ENRICH_KAFKA_SASL_USERNAME",
        "ENRICH_KAFKA_SASL_PASSWORD",
        "ENRICH_ORACLE_USER",
        "ENRICH_ORACLE_PASSWORD",
    }
)

Doc = dict[str, Any]


def load_all_text(text: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def load_all(path: Path) -> list[Doc]:
    return load_all_text(path.read_text())


KUSTOMIZATION: Doc = load_all(K8S / "kustomization.yaml")[0]


def generated_config_maps() -> list[Doc]:
    """The ConfigMaps kustomize builds from files, as it builds them (no name suffix)."""
    maps = []
    for spec in KUSTOMIZATION.get("configMapGenerator", []):
        options = spec.get("options", {})
        assert options.get("disableNameSuffixHash"), "a hashed name cannot be referred to"
        data = {Path(name).name: (K8S / name).read_text() for name in spec["files"]}
        metadata = {"name": spec["name"], "labels": options.get("labels", {})}
        maps.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    return maps


MANIFESTS = [
    *(doc for name in KUSTOMIZATION["resources"] for doc in load_all(K8S / name)),
    *generated_config_maps(),
]
[SECRET] = load_all(K8S / "secret.template.yaml")
[VALUES] = load_all(K8S / "waxctl" / "values.yaml")


def one(kind: str, name: str) -> Doc:
    [doc] = [d for d in MANIFESTS if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


STATEFULSET = one("StatefulSet", "enrich")
POD = STATEFULSET["spec"]["template"]["spec"]
POD_LABELS: dict[str, str] = STATEFULSET["spec"]["template"]["metadata"]["labels"]
[MAIN] = POD["containers"]
[INIT] = POD["initContainers"]
CRONJOB = one("CronJob", "enrich-reference-publisher")
PUBLISHER_POD = CRONJOB["spec"]["jobTemplate"]["spec"]["template"]["spec"]
[PUBLISHER] = PUBLISHER_POD["containers"]
CONFIG = one("ConfigMap", "enrich-config")
HEADLESS = one("Service", "enrich")
METRICS = one("Service", "enrich-metrics")
MONITOR = one("ServiceMonitor", "enrich")


def env_values(container: Doc) -> dict[str, str]:
    """The container's plain `env` values; downward-API ones are left out."""
    return {var["name"]: var["value"] for var in container.get("env", []) if "value" in var}


def field_refs(container: Doc) -> dict[str, str]:
    return {
        var["name"]: var["valueFrom"]["fieldRef"]["fieldPath"]
        for var in container.get("env", [])
        if "fieldRef" in var.get("valueFrom", {})
    }


def mounts(container: Doc) -> dict[str, str]:
    return {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}


def mounted(path: str, container: Doc) -> str | None:
    """The volume holding `path` in the container, if any."""
    for mount_path, name in mounts(container).items():
        if PurePosixPath(path).is_relative_to(mount_path):
            return name
    return None


def port_number(container: Doc, name: str) -> int:
    [number] = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return number


def schema_checked() -> list[Any]:
    return [
        pytest.param(doc, version, id=f"{version}-{doc['kind']}-{doc['metadata']['name']}")
        for version in K8S_VERSIONS
        for doc in [*MANIFESTS, SECRET]
        if doc["kind"] != "ServiceMonitor"
    ]


@pytest.mark.parametrize(("doc", "version"), schema_checked())
def test_manifests_validate_strictly_against_the_kubernetes_schema(doc: Doc, version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_every_manifest_in_k8s_is_applied_except_the_secret_template() -> None:
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk - set(KUSTOMIZATION["resources"]) == {"secret.template.yaml"}
    assert {d["kind"] for d in MANIFESTS} == {
        "Namespace",
        "ConfigMap",
        "Service",
        "StatefulSet",
        "ServiceMonitor",
        "CronJob",
        "PersistentVolumeClaim",
    }
    assert one("Namespace", KUSTOMIZATION["namespace"])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not found")
def test_kustomize_renders_the_manifests_into_the_namespace_with_the_image() -> None:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True
    ).stdout
    docs = load_all_text(rendered)
    assert sorted(_kind_name(d) for d in docs) == sorted(_kind_name(d) for d in MANIFESTS)
    [image] = KUSTOMIZATION["images"]
    expected = f"{image['newName']}:{image['newTag']}"
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == KUSTOMIZATION["namespace"]
        for container in _containers(doc):
            assert container["image"] == expected


def _kind_name(doc: Doc) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def _containers(doc: Doc) -> list[Doc]:
    if doc["kind"] == "StatefulSet":
        spec = doc["spec"]["template"]["spec"]
    elif doc["kind"] == "CronJob":
        spec = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    else:
        return []
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_the_headless_service_gives_the_peer_names_the_cluster_module_builds() -> None:
    """`dataflows.cluster` derives the Service's name from the pod's, and its port."""
    assert STATEFULSET["spec"]["serviceName"] == HEADLESS["metadata"]["name"]
    assert HEADLESS["metadata"]["name"] == STATEFULSET["metadata"]["name"]
    assert HEADLESS["spec"]["clusterIP"] == "None"
    assert HEADLESS["spec"]["publishNotReadyAddresses"] is True
    assert HEADLESS["spec"]["selector"].items() <= POD_LABELS.items()
    [port] = HEADLESS["spec"]["ports"]
    assert port["port"] == port_number(MAIN, port["targetPort"]) == cluster.PEER_PORT
    assert STATEFULSET["spec"]["podManagementPolicy"] == "Parallel"


def test_every_pod_gets_a_distinct_process_id_and_the_same_peers() -> None:
    replicas = STATEFULSET["spec"]["replicas"]
    assert field_refs(MAIN) == {
        cluster.POD_NAME: "metadata.name",
        cluster.POD_NAMESPACE: "metadata.namespace",
    }
    assert MAIN["command"] == ["python", "-m", "dataflows.cluster"]
    envs = [
        cluster.cluster_env(
            env_values(MAIN)
            | {cluster.POD_NAME: f"{STATEFULSET['metadata']['name']}-{ordinal}"}
            | {cluster.POD_NAMESPACE: KUSTOMIZATION["namespace"]}
        )
        for ordinal in range(replicas)
    ]
    assert [env["BYTEWAX_PROCESS_ID"] for env in envs] == [str(i) for i in range(replicas)]
    assert len({env["BYTEWAX_ADDRESSES"] for env in envs}) == 1
    assert len(envs[0]["BYTEWAX_ADDRESSES"].split(";")) == replicas


def test_each_pod_creates_its_recovery_partition_on_its_own_volume() -> None:
    [template] = STATEFULSET["spec"]["volumeClaimTemplates"]
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert INIT["command"] == ["python", "-m", "dataflows.cluster", "init-recovery"]
    assert field_refs(INIT) == {cluster.POD_NAME: "metadata.name"}
    init, main = env_values(INIT), env_values(MAIN)
    directory = main[cluster.RECOVERY_DIRECTORY]
    assert init[cluster.RECOVERY_DIRECTORY] == directory
    assert mounted(directory, INIT) == mounted(directory, MAIN) == template["metadata"]["name"]
    # One partition per pod at the first start; changing it later orphans partitions.
    assert init[cluster.RECOVERY_PARTS] == main[cluster.REPLICAS]
    assert main[cluster.REPLICAS] == str(STATEFULSET["spec"]["replicas"])
    # bytewax.run refuses -r without both intervals, in whole seconds.
    assert main["BYTEWAX_SNAPSHOT_INTERVAL"].isdecimal()
    assert main["BYTEWAX_RECOVERY_BACKUP_INTERVAL"].isdecimal()
    # Resumed together with the partitions: the dead-letter file is truncated to its snapshot.
    for name in ("ENRICH_SQLITE_PATH", "ENRICH_DEAD_LETTER_PATH"):
        assert mounted(main[name], MAIN) == template["metadata"]["name"]
    assert STATEFULSET["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"


def test_probes_and_metrics_use_the_bytewax_api_server() -> None:
    env = env_values(MAIN)
    assert env["BYTEWAX_DATAFLOW_API_ENABLED"] == "true"
    api_port = int(env["BYTEWAX_DATAFLOW_API_PORT"])
    assert port_number(MAIN, "api") == api_port
    for probe in ("livenessProbe", "readinessProbe"):
        assert MAIN[probe]["httpGet"] == {"path": "/metrics", "port": "api"}
    [port] = METRICS["spec"]["ports"]
    assert port["targetPort"] == "api"
    assert METRICS["spec"]["selector"].items() <= POD_LABELS.items()


def test_the_service_monitor_scrapes_the_metrics_service_only() -> None:
    assert MONITOR["apiVersion"] == "monitoring.coreos.com/v1"
    selector = MONITOR["spec"]["selector"]["matchLabels"]
    assert selector.items() <= METRICS["metadata"]["labels"].items()
    assert not selector.items() <= HEADLESS["metadata"]["labels"].items()
    assert "namespaceSelector" not in MONITOR["spec"]  # the ServiceMonitor's own namespace
    [endpoint] = MONITOR["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in METRICS["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert _seconds(endpoint["scrapeTimeout"]) <= _seconds(endpoint["interval"])


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, f"{duration!r} is not a Prometheus duration in s or m"
    return int(match[1]) * (60 if match[2] == "m" else 1)


_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|)")
_UNITS = {"m": 1e-3, "": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _quantity(value: str) -> float:
    match = _QUANTITY.fullmatch(value)
    assert match, f"{value!r} is not a quantity this test reads"
    return float(match[1]) * _UNITS[match[2]]


@pytest.mark.parametrize(
    "resources",
    [MAIN["resources"], INIT["resources"], PUBLISHER["resources"], VALUES["resources"]],
    ids=["dataflow", "init-recovery", "publisher", "waxctl"],
)
def test_every_container_requests_no_more_than_its_limits(resources: Doc) -> None:
    for resource in ("cpu", "memory"):
        request = _quantity(resources["requests"][resource])
        assert 0 < request <= _quantity(resources["limits"][resource])


@pytest.mark.parametrize(
    ("pod", "container"),
    [(POD, MAIN), (POD, INIT), (PUBLISHER_POD, PUBLISHER)],
    ids=["dataflow", "init-recovery", "publisher"],
)
def test_containers_run_unprivileged_and_write_only_to_volumes(pod: Doc, container: Doc) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["enableServiceLinks"] is False
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    env = env_values(container)
    written = [
        env[name]
        for name in (
            "BYTEWAX_DATAFLOW_API_CACHE_PATH",
            cluster.RECOVERY_DIRECTORY,
            "ENRICH_SQLITE_PATH",
            "ENRICH_DEAD_LETTER_PATH",
            "ENRICH_PUBLISH_STATE_PATH",
        )
        if name in env
    ]
    for path in written:
        assert mounted(path, container), f"{path} is on the read-only root file system"


def statefulset_environment(pod_name: str) -> dict[str, str]:
    """What the dataflow container sees, with the Secret template's placeholders."""
    downward = {cluster.POD_NAME: pod_name, cluster.POD_NAMESPACE: KUSTOMIZATION["namespace"]}
    return CONFIG["data"] | SECRET["stringData"] | env_values(MAIN) | downward


def waxctl_environment(pod_name: str) -> dict[str, str]:
    """What Bytewax's chart gives the container from the values, `$(VAR)` expanded."""
    return {
        name: str(value).replace("$(BYTEWAX_POD_NAME)", pod_name)
        for name, value in VALUES["env"].items()
    } | SECRET["stringData"]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith(("ENRICH_", "BYTEWAX_")):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(
    ("environment", "sqlite_path"),
    [
        (statefulset_environment, "/data/enriched.sqlite"),
        (waxctl_environment, "/var/recovery/enrich-1/enriched.sqlite"),
    ],
    ids=["kubectl", "waxctl"],
)
def test_the_settings_accept_the_environment_the_pods_get(
    clean_env: pytest.MonkeyPatch, environment: Callable[[str], dict[str, str]], sqlite_path: str
) -> None:
    for name, value in environment("enrich-1").items():
        clean_env.setenv(name, value)
    settings = load_settings()
    check_dataflow(settings)
    assert settings.sqlite_path == Path(sqlite_path)
    assert settings.source == "kafka"
    assert settings.database == "oracle"
    assert settings.oracle_dsn == CONFIG["data"]["ENRICH_ORACLE_DSN"]
    assert len(settings.kafka_brokers) == 3
    assert settings.dead_letter_topic == CONFIG["data"]["ENRICH_DEAD_LETTER_TOPIC"]
    assert settings.log_format == "json"
    assert settings.kafka_client_config() == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "CHANGE_ME",
        "sasl.password": "CHANGE_ME",
    }


@pytest.mark.parametrize(
    "environment_of",
    [statefulset_environment, waxctl_environment],
    ids=["kubectl", "waxctl"],
)
def test_the_dataflow_pods_set_the_source_and_a_lost_one_is_refused(
    clean_env: pytest.MonkeyPatch, environment_of: Callable[[str], dict[str, str]]
) -> None:
    """Unset, the source is the demo: a pod must never write synthetic rows into Oracle."""
    env = environment_of("enrich-0")
    assert env["ENRICH_SOURCE"] == "kafka"
    assert env["ENRICH_DATABASE"] == "oracle"
    assert "ENRICH_ALLOW_DEMO_INTO_ORACLE" not in env
    for name, value in env.items():
        if name != "ENRICH_SOURCE":
            clean_env.setenv(name, value)
    # The Secret's lookups name topics only, which the demo cannot serve...
    with pytest.raises(SettingsError, match=r"ENRICH_LOOKUPS: .*the source is demo"):
        check_dataflow(load_settings())
    # ...and with the demo's own lookups, the demo is refused an Oracle sink.
    clean_env.delenv("ENRICH_LOOKUPS")
    with pytest.raises(SettingsError, match="ENRICH_SOURCE: the source is the demo"):
        check_dataflow(load_settings())


def test_the_source_is_set_where_the_dataflow_reads_it() -> None:
    """The ConfigMap and the chart's values both name it; the publisher needs none."""
    assert CONFIG["data"]["ENRICH_SOURCE"] == "kafka"
    assert VALUES["env"]["ENRICH_SOURCE"] == "kafka"
    assert {"configMapRef": {"name": CONFIG["metadata"]["name"]}} in MAIN["envFrom"]


def every_enrich_variable() -> set[str]:
    sources = [
        CONFIG["data"],
        SECRET["stringData"],
        VALUES["env"],
        env_values(MAIN),
        env_values(INIT),
    ]
    return {name for source in sources for name in source if name.startswith("ENRICH_")}


def test_every_enrich_variable_set_is_a_setting() -> None:
    """A variable no program reads stops every program at start (exit 2)."""
    names = every_enrich_variable() | set(env_values(PUBLISHER))
    # The ConfigMap serves the dataflow and the reference publisher alike.
    assert {name for name in names if name.startswith("ENRICH_")} <= environment.known_variables(
        PROGRAM_SETTINGS
    )
    publisher = {name.removeprefix("ENRICH_").lower() for name in env_values(PUBLISHER)}
    assert publisher <= set(PublisherSettings.model_fields)


def test_credentials_come_only_from_the_secret() -> None:
    secret_fields = {
        f"ENRICH_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    }
    in_secret = set(SECRET["stringData"])
    assert secret_fields | CREDENTIALS <= in_secret
    for plain in (CONFIG["data"], VALUES["env"], env_values(MAIN), env_values(PUBLISHER)):
        assert not in_secret & set(plain)
    name = SECRET["metadata"]["name"]
    for container in (MAIN, PUBLISHER):
        assert {"secretRef": {"name": name}} in container["envFrom"]
        assert {"configMapRef": {"name": CONFIG["metadata"]["name"]}} in container["envFrom"]
    assert VALUES["envFromSecrets"] == [{"name": name}]
    assert all(
        value == "CHANGE_ME" for key, value in SECRET["stringData"].items() if key in CREDENTIALS
    )


def test_the_reference_publisher_runs_a_full_load_after_the_nightly_reload() -> None:
    spec = CRONJOB["spec"]
    assert PUBLISHER["command"] == ["enrich", "publish", "--full"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["enrich"] == "commands.cli:main"
    assert cli.SUBCOMMANDS["publish"].target == "commands.publish:main"
    assert spec["suspend"] is False
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["timeZone"] == "Etc/UTC"
    assert len(spec["schedule"].split()) == 5


def test_the_publisher_accepts_its_environment_and_keeps_its_state_on_the_claim(
    clean_env: pytest.MonkeyPatch,
) -> None:
    environment = CONFIG["data"] | SECRET["stringData"] | env_values(PUBLISHER)
    for name, value in environment.items():
        clean_env.setenv(name, value)
    settings = load_settings(PublisherSettings)
    assert settings.publish_database == "oracle"
    assert settings.oracle_dsn == CONFIG["data"]["ENRICH_ORACLE_DSN"]
    assert env_values(PUBLISHER)["ENRICH_PUBLISH_LOOKUP"] == "security"
    assert settings.reference_topic == "reference" == settings.lookups[0].topic
    volume = mounted(str(settings.publish_state_path), PUBLISHER)
    [claim] = [
        v["persistentVolumeClaim"]["claimName"]
        for v in PUBLISHER_POD["volumes"]
        if v["name"] == volume
    ]
    assert one("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteOnce"]
    context = PUBLISHER_POD["securityContext"]
    assert context["fsGroup"] == context["runAsGroup"]  # a new volume is writable by the user


# The keys Bytewax's Helm chart 0.8.1 reads (values.yaml and templates/statefulset.yaml,
# pvc.yaml), with their types; `dict` marks a free-form map or a Kubernetes object.
CHART_0_8_1_KEYS: dict[str, type] = {
    "image.repository": str,
    "image.tag": str,
    "image.pullPolicy": str,
    "podAnnotations": dict,
    "api.enabled": bool,
    "api.port": int,
    "resources": dict,
    "env": dict,
    "envFromSecrets": list,
    "configuration.pythonFileName": str,
    "configuration.processesCount": int,
    "configuration.workersPerProcess": int,
    "configuration.keepAlive": bool,
    "configuration.jobMode": bool,
    "configuration.recovery.enabled": bool,
    "configuration.recovery.partsCount": int,
    "configuration.recovery.snapshotInterval": int,
    "configuration.recovery.backupInterval": int,
    "configuration.recovery.persistence.accessModes": list,
    "configuration.recovery.persistence.size": str,
}


def _leaves(values: Doc, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and CHART_0_8_1_KEYS.get(path) is not dict:
            yield from _leaves(value, f"{path}.")
        else:
            yield path, value


def test_waxctl_values_use_only_keys_the_chart_reads() -> None:
    for path, value in _leaves(VALUES):
        assert path in CHART_0_8_1_KEYS, f"chart 0.8.1 has no value {path}"
        assert type(value) is CHART_0_8_1_KEYS[path], path


def chart_objects(values: Doc) -> list[Doc]:
    """The value-dependent parts of chart 0.8.1's StatefulSet and recovery claim.

    Placed as its statefulset.yaml and pvc.yaml place them; everything the
    chart adds on its own is left out.
    """
    config, persistence = (
        values["configuration"],
        values["configuration"]["recovery"]["persistence"],
    )
    container = {
        "name": "process",
        "image": f"{values['image']['repository']}:{values['image']['tag']}",
        "imagePullPolicy": values["image"]["pullPolicy"],
        "env": [{"name": name, "value": str(value)} for name, value in values["env"].items()],
        "envFrom": [
            {"secretRef": {"name": ref["name"], "optional": ref.get("optional", False)}}
            for ref in values["envFromSecrets"]
        ],
        "resources": values["resources"],
        "ports": [{"name": "api", "containerPort": values["api"]["port"]}],
    }
    labels = {"app.kubernetes.io/name": "bytewax"}
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "enrich"},
        "spec": {
            "replicas": config["processesCount"],
            "serviceName": "enrich",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": values["podAnnotations"]},
                "spec": {"containers": [container]},
            },
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "enrich-recovery"},
        "spec": {
            "accessModes": persistence["accessModes"],
            "resources": {"requests": {"storage": persistence["size"]}},
        },
    }
    return [statefulset, claim]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_waxctl_values_make_valid_kubernetes_objects(version: str) -> None:
    for doc in chart_objects(VALUES):
        kubernetes_validate.validate(doc, version, strict=True)
    # The chart writes `value: "<value>"` without escaping.
    assert not [v for v in VALUES["env"].values() if re.search(r'["\\]', str(v))]


def test_waxctl_values_match_the_plain_manifests() -> None:
    config, env = VALUES["configuration"], env_values(MAIN)
    assert CONFIG["data"].items() <= VALUES["env"].items()
    assert config["processesCount"] == STATEFULSET["spec"]["replicas"]
    assert config["recovery"]["partsCount"] == config["processesCount"]
    assert str(config["workersPerProcess"]) == env["BYTEWAX_WORKERS_PER_PROCESS"]
    assert str(config["recovery"]["snapshotInterval"]) == env["BYTEWAX_SNAPSHOT_INTERVAL"]
    assert str(config["recovery"]["backupInterval"]) == env["BYTEWAX_RECOVERY_BACKUP_INTERVAL"]
    assert config["recovery"]["enabled"] is True
    assert VALUES["resources"] == MAIN["resources"]
    assert VALUES["api"] == {"enabled": True, "port": port_number(MAIN, "api")}
    annotations = VALUES["podAnnotations"]
    assert annotations["prometheus.io/port"] == str(VALUES["api"]["port"])
    assert annotations["prometheus.io/path"] == "/metrics"
    [image] = KUSTOMIZATION["images"]
    assert (VALUES["image"]["repository"], VALUES["image"]["tag"]) == (
        image["newName"],
        image["newTag"],
    )


def readme_waxctl_command() -> list[str]:
    text = (K8S / "README.md").read_text()
    [block] = [
        b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "waxctl dataflow deploy" in b
    ]
    return shlex.split(block.replace("\\\n", " "))


def test_the_readme_waxctl_command_agrees_with_the_values() -> None:
    words = readme_waxctl_command()
    assert words[:3] == ["waxctl", "dataflow", "deploy"]
    flow_file, flags = words[3], words[4:]
    options: dict[str, str] = {}
    for word in flags:
        if word.startswith("--"):
            options[word] = ""
            last = word
        else:
            options[last] = word
    config, image = VALUES["configuration"], VALUES["image"]
    assert (ROOT / flow_file).is_file()
    assert PurePosixPath(flow_file).name == config["pythonFileName"]
    assert ROOT / options["--chart-values-file"] == K8S / "waxctl" / "values.yaml"
    assert options["--namespace"] == KUSTOMIZATION["namespace"]  # where the Secret is
    assert {
        "--image-repository": image["repository"],
        "--image-tag": image["tag"],
        "--image-pull-policy": image["pullPolicy"],
        "--processes": str(config["processesCount"]),
        "--workers": str(config["workersPerProcess"]),
        "--recovery": "",
        "--recovery-parts": str(config["recovery"]["partsCount"]),
        "--recovery-snapshot-interval": str(config["recovery"]["snapshotInterval"]),
        "--recovery-backup-interval": str(config["recovery"]["backupInterval"]),
        "--recovery-size": config["recovery"]["persistence"]["size"],
    }.items() <= options.items()


def chart_pod_env(tmp_path: Path, pod_name: str, parts: int) -> dict[str, str]:
    """What the chart's containers run the image's scripts with, on this machine.

    `hostname` answers the pod name, as it does in the pod; the chart gives its
    init container no other way to know it.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "hostname").write_text(f"#!/bin/sh\necho {pod_name}\n")
    (bin_dir / "hostname").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENRICH_", "BYTEWAX_"))}
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")])
    return env | {
        "PATH": path,
        "PYTHONPATH": str(ROOT),  # installed in the image's /venv instead
        "BYTEWAX_RECOVERY_DIRECTORY": str(tmp_path / "recovery"),
        "BYTEWAX_RECOVERY_PARTS": str(parts),
        "BYTEWAX_SNAPSHOT_INTERVAL": "1",
        "BYTEWAX_RECOVERY_BACKUP_INTERVAL": "0",
    }


def run_script(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(K8S / "image" / name)], env=env, capture_output=True, text=True
    )


def test_the_chart_init_step_creates_the_partition_of_the_pod_it_runs_in(tmp_path: Path) -> None:
    done = run_script("entrypoint-recovery.sh", chart_pod_env(tmp_path, "enrich-1", 3))
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (tmp_path / "recovery").iterdir()] == ["part-1.sqlite3"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BYTEWAX_PYTHON_FILE_PATH", "{workdir}/enrich_flow.py"),
        ("BYTEWAX_IMPORT_STR", "enrich_flow"),
    ],
    ids=["chart-0.8", "import-string"],
)
def test_a_chart_pod_runs_the_deployed_file_with_recovery(
    tmp_path: Path, variable: str, value: str
) -> None:
    """The chart's init and main containers in turn, as a one-process cluster."""
    env = chart_pod_env(tmp_path, "enrich-0", 1)
    assert run_script("entrypoint-recovery.sh", env).returncode == 0
    workdir = tmp_path / "bytewax"
    workdir.mkdir()
    shutil.copy(K8S / "waxctl" / "enrich_flow.py", workdir)
    hostfile = tmp_path / "hostfile.txt"
    hostfile.write_text(f"127.0.0.1:{free_port()}\n")
    env |= {
        "BYTEWAX_WORKDIR": str(workdir),
        variable: value.format(workdir=workdir),
        "BYTEWAX_POD_NAME": "enrich-0",
        "BYTEWAX_STATEFULSET_NAME": "enrich",
        "BYTEWAX_HOSTFILE_PATH": str(hostfile),
        "ENRICH_DEMO_EVENTS": "200",
        "ENRICH_DEMO_REFERENCES": "20",
        "ENRICH_PROGRESS_SECONDS": "0",
        "ENRICH_SQLITE_PATH": str(tmp_path / "enriched.sqlite"),
        "ENRICH_DEAD_LETTER_PATH": str(tmp_path / "dead_letters.jsonl"),
    }
    done = run_script("entrypoint.sh", env)
    assert done.returncode == 0, done.stderr
    with closing(sqlite3.connect(tmp_path / "enriched.sqlite")) as conn:
        assert conn.execute("select count(*) from enriched_events").fetchone()[0] > 150
    with closing(sqlite3.connect(tmp_path / "recovery" / "part-0.sqlite3")) as conn:
        assert conn.execute("select count(*) from snaps").fetchone()[0] > 0


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


DOCKERFILE = (ROOT / "Dockerfile").read_text()
DOCKERIGNORE = (ROOT / ".dockerignore").read_text().split("\n")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def dockerfile_copies() -> list[str]:
    """Sources of every COPY from the build context (not from a build stage)."""
    sources = []
    for line in DOCKERFILE.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += words[1:-1]
    return sources


def test_the_image_copies_files_that_exist_and_the_build_context_keeps() -> None:
    """.dockerignore excludes everything, then re-includes by name."""
    assert next(line for line in DOCKERIGNORE if line and not line.startswith("#")) == "*"
    kept = {line[1:].rstrip("/") for line in DOCKERIGNORE if line.startswith("!")}
    for source in dockerfile_copies():
        assert (ROOT / source).exists(), source
        path = PurePosixPath(source.rstrip("/"))
        assert any(path == PurePosixPath(k) or path.is_relative_to(k) for k in kept), source


def test_the_image_installs_every_package_the_project_ships() -> None:
    patterns = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        p.name
        for p in ROOT.iterdir()
        if (p / "__init__.py").exists() and any(p.match(pattern) for pattern in patterns)
    }
    assert packages
    assert packages <= {source.rstrip("/") for source in dockerfile_copies()}


def test_the_constraints_pin_every_runtime_dependency_within_its_range() -> None:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    for dependency in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned: regenerate constraints.txt (k8s/README.md)"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]}"


def test_the_image_runs_the_dataflow_as_a_non_root_user_on_a_supported_python() -> None:
    [base] = re.findall(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)-slim", DOCKERFILE, re.M)
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(f"{base}.0")
    [user] = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert user.split(":")[0] not in {"0", "root"}
    assert str(POD["securityContext"]["runAsUser"]) == user.split(":")[0]
    assert 'ENTRYPOINT ["python", "-m", "bytewax.run", "dataflows.enrich"]' in DOCKERFILE
    assert "STOPSIGNAL SIGINT" in DOCKERFILE
    # Bytewax's chart runs these from the image's working directory.
    assert "COPY k8s/image/entrypoint.sh k8s/image/entrypoint-recovery.sh ./" in DOCKERFILE
