"""What a benchmark produces: latency summaries, per-scenario results, the whole report.

Records are frozen. Raw latency samples ride along (``latencies_ms``) for plots but are left out of
JSON, which carries a histogram instead; :mod:`edgecore.bench.report` writes the JSON.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

import attrs
import numpy as np

__all__ = ["LatencySummary", "summarize", "Measured", "BaselineResult", "ScenarioResult", "BenchReport", "SCHEMA"]

#: Identifies the JSON layout documented in docs/benchmarks.md.
SCHEMA = "edgecore.bench/1"

PERCENTILES = (50, 90, 95, 99)
HISTOGRAM_BINS = 40


def _frozen(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


def _array(value: Any) -> np.ndarray:
    array = np.asarray(value if value is not None else (), dtype=np.float64).reshape(-1)
    array.setflags(write=False)
    return array


@attrs.frozen(kw_only=True)
class LatencySummary:
    """Latency statistics in milliseconds over ``count`` kept queries."""

    count: int
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    def to_json(self) -> dict[str, float | int]:
        return attrs.asdict(self)


def summarize(latencies_ms: Any) -> LatencySummary | None:
    """Summary of a sequence of latencies (ms); None when there are none."""
    values = np.asarray(latencies_ms, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    p50, p90, p95, p99 = np.percentile(values, PERCENTILES)
    return LatencySummary(
        count=int(values.size),
        mean=float(values.mean()),
        std=float(values.std()),
        min=float(values.min()),
        p50=float(p50),
        p90=float(p90),
        p95=float(p95),
        p99=float(p99),
        max=float(values.max()),
    )


def histogram(latencies_ms: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict[str, list[float]] | None:
    """``{"edges_ms": [...], "counts": [...]}`` of the latencies, clipped at p99.9 so that one outlier
    does not squash the distribution into one bin; ``counts[-1]`` also holds everything above."""
    values = latencies_ms[np.isfinite(latencies_ms)]
    if values.size == 0:
        return None
    low, high = float(values.min()), float(np.percentile(values, 99.9))
    if high <= low:
        high = low + max(abs(low) * 1e-3, 1e-6)
    counts, edges = np.histogram(np.clip(values, low, high), bins=bins, range=(low, high))
    return {"edges_ms": [float(e) for e in edges], "counts": [int(c) for c in counts]}


@attrs.frozen(kw_only=True)
class Measured:
    """What one side (edgecore or a raw runtime) did in a measured scenario."""

    queries: int
    samples: int
    elapsed_s: float
    latencies_ms: np.ndarray = attrs.field(converter=_array, eq=False, repr=False)
    failures: int = 0

    @property
    def latency(self) -> LatencySummary | None:
        return summarize(self.latencies_ms)

    @property
    def queries_per_s(self) -> float | None:
        return self.queries / self.elapsed_s if self.elapsed_s > 0 else None

    @property
    def samples_per_s(self) -> float | None:
        return self.samples / self.elapsed_s if self.elapsed_s > 0 else None


@attrs.frozen(kw_only=True)
class BaselineResult:
    """The raw runtime's figures for the same scenario, and edgecore / raw ratios.

    Every ratio is edgecore's figure divided by the raw runtime's: below 1 is better for edgecore
    for latencies, above 1 is better for edgecore for throughputs.
    """

    runtime: str
    version: str
    queries: int = 0
    samples: int = 0
    elapsed_s: float = 0.0
    latency: LatencySummary | None = None
    queries_per_s: float | None = None
    samples_per_s: float | None = None
    metrics: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen)
    ratio: Mapping[str, float | None] = attrs.field(factory=dict, converter=_frozen)
    latencies_ms: np.ndarray = attrs.field(factory=lambda: _array(()), converter=_array, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class ScenarioResult:
    """One scenario at one batch size: edgecore's figures, scenario-specific metrics, the baseline.

    ``latency`` is per query (a query is ``batch`` samples; in multi-stream, ``streams`` of them);
    ``queries_per_s``/``samples_per_s`` are kept queries (samples) over measured time.
    """

    scenario: str
    description: str = ""
    batch: int | None = None
    queries: int = 0
    samples: int = 0
    elapsed_s: float = 0.0
    failures: int = 0
    latency: LatencySummary | None = None
    queries_per_s: float | None = None
    samples_per_s: float | None = None
    metrics: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen)
    baseline: BaselineResult | None = None
    latencies_ms: np.ndarray = attrs.field(factory=lambda: _array(()), converter=_array, eq=False, repr=False)

    @classmethod
    def from_measured(
        cls, scenario: str, measured: Measured, *, batch: int | None, metrics: Mapping[str, Any] | None = None
    ) -> ScenarioResult:
        return cls(
            scenario=scenario,
            batch=batch,
            queries=measured.queries,
            samples=measured.samples,
            elapsed_s=measured.elapsed_s,
            failures=measured.failures,
            latency=measured.latency,
            queries_per_s=measured.queries_per_s,
            samples_per_s=measured.samples_per_s,
            metrics=metrics,
            latencies_ms=measured.latencies_ms,
        )


def baseline_from(
    ours: Measured, raw: Measured, *, runtime: str, version: str, metrics: Mapping[str, Any] | None = None
) -> BaselineResult:
    """The baseline record for ``raw`` with ratios of ``ours`` over it."""
    a, b = ours.latency, raw.latency

    def ratio(x: float | None, y: float | None) -> float | None:
        return x / y if x is not None and y else None

    return BaselineResult(
        runtime=runtime,
        version=version,
        queries=raw.queries,
        samples=raw.samples,
        elapsed_s=raw.elapsed_s,
        latency=b,
        queries_per_s=raw.queries_per_s,
        samples_per_s=raw.samples_per_s,
        metrics=metrics,
        ratio={
            "p50": ratio(a and a.p50, b and b.p50),
            "p99": ratio(a and a.p99, b and b.p99),
            "mean": ratio(a and a.mean, b and b.mean),
            "queries_per_s": ratio(ours.queries_per_s, raw.queries_per_s),
        },
        latencies_ms=raw.latencies_ms,
    )


@attrs.frozen(kw_only=True)
class BenchReport:
    """A whole benchmark run: what was measured, how, where, and the results."""

    model: Mapping[str, Any] = attrs.field(converter=_frozen)
    backend: str
    config: Mapping[str, Any] = attrs.field(converter=_frozen)
    settings: Mapping[str, Any] = attrs.field(converter=_frozen)
    method: Mapping[str, Any] = attrs.field(converter=_frozen)
    machine: Mapping[str, Any] = attrs.field(converter=_frozen)
    results: tuple[ScenarioResult, ...] = attrs.field(converter=tuple)
    created: str = ""
    wall_s: float = 0.0
    command: str | None = None
    optimization: Mapping[str, Any] | None = attrs.field(default=None, converter=attrs.converters.optional(_frozen))
    schema: str = SCHEMA

    def result(self, scenario: str) -> ScenarioResult:
        """The first result of ``scenario`` (KeyError if it did not run)."""
        for result in self.results:
            if result.scenario == scenario:
                return result
        raise KeyError(scenario)
