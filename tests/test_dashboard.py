"""The Grafana dashboard in k8s/ asks only for series the product serves, with their labels.

PromQL is not parsed in full: label matchers, grouping clauses, ranges and
strings are read with patterns, and every other name must be a function, a
keyword, or a series of `telemetry/metrics.py` (a counter as `_total`, a
histogram as `_bucket`, `_sum` and `_count`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from telemetry import metrics
from telemetry.histogram import BatchHistogram

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD_FILE = ROOT / "k8s" / "grafana-dashboard.json"
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())

TARGET_LABELS = frozenset({"job", "instance"})
"""Labels Prometheus adds to every scraped series."""
FUNCTIONS = frozenset(
    {"sum", "max", "min", "avg", "count", "topk", "bottomk", "rate", "increase", "irate"}
    | {"histogram_quantile", "vector", "label_values", "clamp_min", "abs"}
)
KEYWORDS = frozenset({"by", "without", "or", "and", "unless", "bool", "offset"})

_MATCHERS = re.compile(r"\{([^}]*)\}")
_MATCHER = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*\"(?:[^\"\\]|\\.)*\"\s*")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_STRINGS = re.compile(r"\"(?:[^\"\\]|\\.)*\"")
_RANGES = re.compile(r"\[[^\]]*\]")
_NAMES = re.compile(r"(?<![\w$.])[A-Za-z_:][A-Za-z0-9_:]*")


def product_series() -> dict[str, frozenset[str]]:
    """Every series name the product's registry serves, with the labels it carries."""
    series: dict[str, frozenset[str]] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            # prometheus_client keeps a family's label names only in this attribute.
            name, kind, labels = metric._name, metric._type, frozenset(metric._labelnames)
        elif isinstance(metric, BatchHistogram):
            name, kind, labels = metric.name, "histogram", frozenset()
        else:
            continue
        if kind == "counter":
            series[f"{name}_total"] = labels
        elif kind == "histogram":
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_sum"] = series[f"{name}_count"] = labels
        else:
            series[name] = labels
    return series


SERIES = product_series()


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from panels(item.get("panels", []))


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    found = [
        (f"panel {panel['title']!r}", target["expr"])
        for panel in panels(DASHBOARD["panels"])
        for target in panel.get("targets", [])
    ]
    for variable in DASHBOARD["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"variable {variable['name']!r}", variable["query"]["query"]))
    return found


def names_and_labels(expr: str) -> tuple[set[str], set[str]]:
    """The series an expression reads and the label names it matches or groups by."""
    labels: set[str] = set()
    for block in _MATCHERS.findall(expr):
        for part in _STRINGS.sub('""', block).split(","):
            if part.strip():
                match = _MATCHER.fullmatch(part)
                assert match, f"unreadable matcher {part!r} in {expr!r}"
                labels.add(match[1])
    for group in _GROUPING.findall(expr):
        labels.update(name.strip() for name in group.split(",") if name.strip())
    bare = _RANGES.sub("", _GROUPING.sub("", _MATCHERS.sub("", _STRINGS.sub("", expr))))
    if bare.startswith("label_values("):
        # label_values(series, label): the last name is a label, not a series.
        *bare_names, label = _NAMES.findall(bare)
        labels.add(label)
        bare = " ".join(bare_names)
    names = set(_NAMES.findall(bare)) - FUNCTIONS - KEYWORDS
    return names, labels


@pytest.mark.parametrize(
    ("where", "expr"), [pytest.param(where, expr, id=where) for where, expr in queries()]
)
def test_every_query_names_series_and_labels_the_product_serves(where: str, expr: str) -> None:
    names, labels = names_and_labels(expr)
    unknown = names - SERIES.keys()
    assert names and not unknown, f"{where}: {sorted(unknown)} not served; {expr}"
    carried = set().union(*(SERIES[name] for name in names)) | TARGET_LABELS
    assert labels <= carried, f"{where}: labels {sorted(labels - carried)} not on {sorted(names)}"


def test_the_checker_refuses_what_the_product_does_not_serve() -> None:
    names, labels = names_and_labels(
        'sum by (topic, shard) (rate(enrich_kafka_lag_total{job=~"$job", part!="0"}[5m]))'
    )
    assert names == {"enrich_kafka_lag_total"} and names - SERIES.keys()
    assert labels == {"topic", "shard", "job", "part"}
    assert {"shard", "part"}.isdisjoint(SERIES["enrich_kafka_consumer_lag"])


def test_the_dashboard_shows_what_operators_look_at_first() -> None:
    """Throughput by status, misses and late enrichments by lookup, waiting events, consumer
    lag, sink latency and errors, circuit state, dead letters by reason."""
    shown = {
        (name, frozenset(labels))
        for _, expr in queries()
        for name in names_and_labels(expr)[0]
        for labels in [names_and_labels(expr)[1]]
    }

    def shows(series: str, *labels: str) -> bool:
        return any(name == series and set(labels) <= used for name, used in shown)

    assert shows("enrich_sink_rows_total", "status")
    assert shows("enrich_events_out_total", "status", "lookup")
    assert shows("enrich_lookups_total", "lookup", "result")
    assert shows("enrich_pending_events", "lookup")
    assert shows("enrich_kafka_consumer_lag", "topic")
    assert shows("enrich_kafka_consumer_lag", "topic", "partition")
    assert shows("enrich_sink_batch_seconds_bucket", "le")
    assert shows("enrich_sink_errors_total", "kind")
    assert shows("enrich_sink_circuit_state", "partition")
    assert shows("enrich_dead_letters_total", "reason")


def test_panels_use_the_chosen_data_source_and_do_not_overlap() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(DASHBOARD["panels"])]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels(DASHBOARD["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"{panel['title']!r} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_kustomize_ships_the_dashboard_to_grafanas_sidecar() -> None:
    kustomization = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())
    [generated] = [
        spec
        for spec in kustomization["configMapGenerator"]
        if spec["name"] == "enrich-grafana-dashboard"
    ]
    assert generated["files"] == [DASHBOARD_FILE.name]
    assert generated["options"]["labels"]["grafana_dashboard"] == "1"
    # The sidecar reads every key as a dashboard file; a ConfigMap holds at most 1 MiB.
    assert DASHBOARD_FILE.stat().st_size < 1_000_000
