"""docs/OPERATIONS.md's metrics table names every metric the process exports, with its labels."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from telemetry import metrics
from telemetry.histogram import BatchHistogram

DOC = Path(__file__).resolve().parents[1] / "docs" / "OPERATIONS.md"


def exported() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every metric defined in telemetry/metrics.py: name as exported → (type, label names)."""
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            found[f"{value._name}_total"] = ("counter", tuple(value._labelnames))
        elif isinstance(value, Gauge):
            found[value._name] = ("gauge", tuple(value._labelnames))
        elif isinstance(value, Histogram):
            found[value._name] = ("histogram", tuple(value._labelnames))
        elif isinstance(value, BatchHistogram):
            found[value.name] = ("histogram", ())
    return found


def documented() -> dict[str, tuple[str, str]]:
    """The metrics table's rows: name → (type, labels cell)."""
    rows: dict[str, tuple[str, str]] = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"^\| `(enrich_[a-z_]+)` \| (\w+) \|([^|]*)\|", line)
        if match:
            rows[match[1]] = (match[2], match[3].strip())
    return rows


def test_every_metric_is_documented_with_its_type_and_labels() -> None:
    metrics_found, rows = exported(), documented()
    assert len(metrics_found) > 15
    assert sorted(rows) == sorted(metrics_found)
    for name, (kind, labels) in metrics_found.items():
        doc_kind, cell = rows[name]
        assert doc_kind == kind, name
        named = re.findall(r"(?:^|; )`([a-z_]+)`", cell)
        assert tuple(named) == labels, f"{name}: labels {labels}, documented {cell!r}"
