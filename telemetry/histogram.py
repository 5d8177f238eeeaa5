"""A Prometheus histogram that takes a whole batch of observations at once.

prometheus_client's `Histogram.observe` takes one value and one lock per call;
the values here come one per event (how long each waited, how old each is
when committed), so a batch is sorted once and counted into the buckets with
one lock, keeping the hot path per batch rather than per event.

A value that is not a finite number is left out, never counted: one NaN would
make the sum NaN for good and scramble the sort, and inf beside -inf makes
`fsum` raise. Decode already refuses the records such values come from, so
this is only a guard, and it costs nothing while every value is finite.
"""

from __future__ import annotations

import logging
import math
import threading
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

log = logging.getLogger("enrich.metrics")


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
        self.left_out = 0
        """Observations left out because they, or their batch's sum, were not finite."""
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        ordered = sorted(values)
        if not ordered:
            return
        total = _finite_sum(ordered)
        if total is None:
            ordered, total = self._finite_part(ordered)
            if not ordered:
                return
        below = [bisect_right(ordered, bound) for bound in self._bounds]
        with self._lock:
            for i, count in enumerate(below):
                self._cumulative[i] += count
            self._count += len(ordered)
            self._sum += total

    def _finite_part(self, values: list[float]) -> tuple[list[float], float]:
        """The finite values of a batch and their sum; none if even that sum overflows."""
        finite = sorted(value for value in values if math.isfinite(value))
        total = _finite_sum(finite)
        if total is None:
            finite, total = [], 0.0
        if not self.left_out:
            log.warning(
                "histogram %s left out observations that are not finite numbers; decode "
                "should have refused the records they came from: please report it",
                self.name,
            )
        self.left_out += len(values) - len(finite)
        return finite, total

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


def _finite_sum(values: list[float]) -> float | None:
    """The exact sum, or None when a value or the sum is not finite."""
    try:
        total = math.fsum(values)
    except (OverflowError, ValueError):
        return None
    return total if math.isfinite(total) else None
