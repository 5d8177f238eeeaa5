"""A Prometheus histogram that takes a whole batch of observations at once.

prometheus_client's `Histogram.observe` takes one value and one lock per call;
the values here come one per event (how long each waited, how old each is
when committed), so a batch is sorted once and counted into the buckets with
one lock, keeping the hot path per batch rather than per event.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString


class BatchHistogram(Collector):
    """A label-less histogram, served like any other from the registry it joins."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        bounds = sorted(buckets)
        if not bounds or len(set(bounds)) != len(bounds) or math.isinf(bounds[-1]):
            raise ValueError(f"{name}: buckets must be distinct finite bounds, got {buckets}")
        self.name = name
        self.documentation = documentation
        self._bounds = tuple(bounds)
        self._cumulative = [0] * len(bounds)
        self._count = 0
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        ordered = sorted(values)
        if not ordered:
            return
        below = [bisect_right(ordered, bound) for bound in self._bounds]
        total = math.fsum(ordered)
        with self._lock:
            for i, count in enumerate(below):
                self._cumulative[i] += count
            self._count += len(ordered)
            self._sum += total

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cumulative, count, total = list(self._cumulative), self._count, self._sum
        buckets = [
            (floatToGoString(bound), below)
            for bound, below in zip(self._bounds, cumulative, strict=True)
        ]
        buckets.append(("+Inf", count))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)
