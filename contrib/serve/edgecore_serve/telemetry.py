"""The server's own Prometheus series: requests by protocol, endpoint and status, and their latency.

``/metrics`` serves these after edgecore's engine exposition (:func:`edgecore.metrics.generate_latest`,
imported when scraped): ``edgecore_server_requests_total{protocol,endpoint,code}`` (counter) and
``edgecore_server_request_duration_us{protocol,endpoint}`` (histogram, µs); and, per model version
of the repository, ``edgecore_server_model_loads_total``, ``edgecore_server_model_evictions_total``
(counters) and ``edgecore_server_model_memory_bytes`` (gauge: measured at its load, 0 when unloaded).

Concurrency: :meth:`ServerMetrics.observe` is called on the event loop's thread only (HTTP and gRPC
share it), so it takes no lock; :meth:`text` runs there too.
"""

from __future__ import annotations

import bisect
import logging
from typing import Any

__all__ = ["BUCKETS_US", "ServerMetrics", "endpoint_of", "exposition"]

logger = logging.getLogger(__name__)

BUCKETS_US: tuple[float, ...] = (
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 10_000_000,
)


def endpoint_of(path: str) -> str:
    """A low-cardinality label for an HTTP path (model names stay out of the label)."""
    if path.startswith("/v2/health/"):
        return "health"
    if path == "/metrics":
        return "metrics"
    if path.startswith("/v2/repository"):
        return "repository"
    if path in ("/v2", "/v2/"):
        return "server_metadata"
    if path.startswith("/v2/models"):
        last = path.rstrip("/").rsplit("/", 1)[-1]
        if last in ("infer", "ready", "config", "stats"):
            return last
        return "model_metadata"
    return "other"


class ServerMetrics:
    def __init__(self, repository: Any = None) -> None:
        self.repository = repository  # a ModelRepository, for the per-model series
        self._counts: dict[tuple[str, str, str], int] = {}
        self._hist: dict[tuple[str, str], list[float]] = {}  # bucket counts..., +Inf count, sum

    def observe(self, protocol: str, endpoint: str, code: int | str, seconds: float) -> None:
        key = (protocol, endpoint, str(code))
        self._counts[key] = self._counts.get(key, 0) + 1
        hist = self._hist.get((protocol, endpoint))
        if hist is None:
            hist = self._hist[(protocol, endpoint)] = [0.0] * (len(BUCKETS_US) + 2)
        us = seconds * 1e6
        hist[bisect.bisect_left(BUCKETS_US, us)] += 1
        hist[-1] += us

    def text(self) -> str:
        lines = [
            "# HELP edgecore_server_requests_total Requests answered by the server, by protocol, endpoint and status.",
            "# TYPE edgecore_server_requests_total counter",
        ]
        for (protocol, endpoint, code), n in sorted(self._counts.items()):
            lines.append(f'edgecore_server_requests_total{{protocol="{protocol}",endpoint="{endpoint}",code="{code}"}} {n}')
        lines += [
            "# HELP edgecore_server_request_duration_us Time to answer a request in the server, in microseconds.",
            "# TYPE edgecore_server_request_duration_us histogram",
        ]
        for (protocol, endpoint), hist in sorted(self._hist.items()):
            labels = f'protocol="{protocol}",endpoint="{endpoint}"'
            running = 0
            for bound, n in zip(BUCKETS_US, hist):
                running += int(n)
                lines.append(f'edgecore_server_request_duration_us_bucket{{{labels},le="{bound:g}"}} {running}')
            running += int(hist[len(BUCKETS_US)])
            lines.append(f'edgecore_server_request_duration_us_bucket{{{labels},le="+Inf"}} {running}')
            lines.append(f"edgecore_server_request_duration_us_sum{{{labels}}} {hist[-1]:.1f}")
            lines.append(f"edgecore_server_request_duration_us_count{{{labels}}} {running}")
        if self.repository is not None:
            lines += self._model_lines()
        return "\n".join(lines) + "\n"

    def _model_lines(self) -> list[str]:
        versions = list(self.repository.all_versions())
        series = (
            ("loads_total", "counter", "Loads of the model version (lazy, explicit, or after an eviction).",
             lambda v: v.loads),
            ("evictions_total", "counter", "Unloads of the model version to stay within the memory budget.",
             lambda v: v.evictions),
            ("memory_bytes", "gauge", "Memory of the loaded model version (RSS growth at its load; 0 when unloaded).",
             lambda v: v.memory_bytes if v.engine is not None else 0),
        )
        lines = []
        for name, kind, doc, value in series:
            lines += [f"# HELP edgecore_server_model_{name} {doc}", f"# TYPE edgecore_server_model_{name} {kind}"]
            for v in versions:
                model = v.name.replace("\\", "\\\\").replace('"', '\\"')
                lines.append(f'edgecore_server_model_{name}{{model="{model}",version="{v.version}"}} {value(v)}')
        return lines


def exposition(server: ServerMetrics) -> bytes:
    """edgecore's engine series followed by the server's (engines alone fail soft: logged, skipped)."""
    try:
        from edgecore import metrics

        engines = metrics.generate_latest()
    except Exception as exc:  # prometheus-client missing, or the exposition failed
        logger.warning("engine metrics unavailable: %s", exc)
        engines = b""
    return engines + server.text().encode()
