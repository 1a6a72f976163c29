"""Engine metrics: ``engine.metrics()`` against psutil, and ``/metrics`` of a real engine against
``engine.stats()``, read back by prometheus-client's own parser."""

from __future__ import annotations

import urllib.request

import attrs
import numpy as np
import pytest

from edgecore import Engine, EngineConfig
from edgecore.metrics import EngineMetrics, default_collector, start_http_server

prometheus_client = pytest.importorskip("prometheus_client")
psutil = pytest.importorskip("psutil")
pytest.importorskip("edgecore_cpu_simd")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

MODEL = "zoo:mobilenet_v2_tiny"


def feeds_for(engine: Engine) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        spec.name: rng.standard_normal((1, *[d if isinstance(d, int) else 1 for d in spec.shape[1:]]))
        .astype(spec.dtype.numpy)
        for spec in engine.inputs
    }


def scrape(engine: Engine) -> dict[str, dict[tuple, float]]:
    """``/metrics`` from a real HTTP server on localhost (ephemeral port), parsed."""
    server, _ = start_http_server(0, addr="127.0.0.1", engines=[engine])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=30) as resp:
            body = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(metrics: dict, name: str, **labels) -> float:
    (value,) = [v for k, v in metrics[name].items() if all(dict(k).get(a) == b for a, b in labels.items())]
    return value


def check_against_stats(metrics: dict, engine: Engine) -> None:
    stats = engine.stats()
    who = {"model": engine.graph.name, "backend": "cpu_simd"}
    items = sum(size * n for size, n in stats.batch_size_histogram.items())
    assert one(metrics, "edgecore_inference_count_total", **who) == items
    assert one(metrics, "edgecore_inference_exec_count_total", **who) == stats.total_executions
    assert one(metrics, "edgecore_inference_request_success_total", **who) == stats.total_inferences
    failures = stats.failed_inferences + stats.rejected_requests + stats.timed_out_requests
    assert one(metrics, "edgecore_inference_request_failure_total", **who) == failures
    for hist in ("edgecore_request_duration_us", "edgecore_queue_duration_us", "edgecore_compute_duration_us"):
        assert one(metrics, f"{hist}_count", **who) == stats.total_inferences
        assert one(metrics, f"{hist}_bucket", le="+Inf", **who) == stats.total_inferences
    total_us = one(metrics, "edgecore_request_duration_us_sum", **who)
    assert total_us == pytest.approx(stats.average_latency_ms * 1000 * stats.total_inferences, rel=1e-6)
    queue_us = one(metrics, "edgecore_queue_duration_us_sum", **who)
    assert queue_us == pytest.approx(stats.average_queue_ms * 1000 * stats.total_inferences, rel=1e-6, abs=1e-3)
    assert one(metrics, "edgecore_batch_size_count", **who) == stats.total_executions
    assert one(metrics, "edgecore_batch_size_sum", **who) == items
    assert one(metrics, "edgecore_queue_depth", **who) == stats.queue_depth
    assert one(metrics, "edgecore_memory_usage_bytes", **who) > 0


def test_direct_requests_metrics_match_stats():
    with Engine(EngineConfig(backend="cpu_simd", num_threads=1)).load(MODEL) as engine:
        feeds = feeds_for(engine)
        for _ in range(25):
            engine.run(feeds)
        with pytest.raises(Exception):
            engine.run({"wrong": np.zeros(1, np.float32)})  # refused before it runs: not a failure
        metrics = scrape(engine)
        check_against_stats(metrics, engine)
        assert engine.stats().total_inferences == 25
        who = {"model": engine.graph.name, "backend": "cpu_simd"}
        # direct requests never queue: every one is in the first queue bucket
        assert one(metrics, "edgecore_queue_duration_us_bucket", le="50", **who) == 25
        assert one(metrics, "edgecore_pool_in_use_bytes", **who) >= 0


def test_scheduled_requests_metrics_match_stats():
    config = EngineConfig(backend="cpu_simd", num_threads=1, max_batch_size=4, max_queue_delay_us=5_000,
                          adaptive_batching=False)
    with Engine(config).load(MODEL) as engine:
        feeds = feeds_for(engine)
        for _ in range(3):
            for f in [engine.submit(feeds) for _ in range(6)]:
                f.result(timeout=60)
        stats = engine.stats()
        assert stats.total_inferences == 18 and stats.total_executions < 18  # some batches formed
        check_against_stats(scrape(engine), engine)


def test_engine_metrics_snapshot():
    with Engine(EngineConfig(backend="cpu_simd", num_threads=1)).load(MODEL) as engine:
        feeds = feeds_for(engine)
        for _ in range(10):
            engine.run(feeds)
        m = engine.metrics()
        rss = psutil.Process().memory_info().rss
    assert isinstance(m, EngineMetrics)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        m.memory_usage_bytes = 0  # type: ignore[misc]
    assert abs(m.memory_usage_bytes - rss) < 0.2 * rss  # the process's RSS
    assert m.peak_memory_bytes >= m.memory_usage_bytes
    assert 0.0 <= m.cpu_utilization_percent <= 100.0 and m.cpu_count >= 1
    assert m.model == engine.graph.name and m.backend == "cpu_simd" and m.queue_depth == 0
    assert m.model_memory_bytes > 0
    assert m.pool is not None and m.pool.allocations > 0
    data = m.to_json()
    assert data["pool"]["hit_rate"] == m.pool.hit_rate and data["memory_usage_bytes"] == m.memory_usage_bytes


def test_loaded_engines_are_tracked_until_closed():
    engine = Engine(EngineConfig(backend="cpu_simd", num_threads=1))
    assert engine not in default_collector().providers()
    engine.load(MODEL)
    assert engine in default_collector().providers()
    engine.close()
    assert engine not in default_collector().providers()
