"""Prometheus exposition: what prometheus-client's own parser reads back equals the samples given."""

from __future__ import annotations

import gc
import logging
import sys
import urllib.request

import pytest

from edgecore.errors import ConfigurationError, EdgecoreError
from edgecore.metrics import (
    EngineCollector,
    HistogramSample,
    MetricsSample,
    generate_latest,
    make_registry,
    start_http_server,
    track,
    untrack,
)

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

BOUNDS = (100, 1000, 10000)


def sample(model="mnv2", backend="cpu_simd", **kw) -> MetricsSample:
    base = dict(
        model=model, backend=backend,
        inference_count=120, inference_exec_count=40, request_success=118, request_failure=2,
        request_duration_us=HistogramSample(bounds=BOUNDS, counts=(5, 100, 13, 2), sum=250_000.5),
        queue_duration_us=HistogramSample(bounds=BOUNDS, counts=(110, 10, 0, 0), sum=9_000),
        compute_duration_us=HistogramSample(bounds=BOUNDS, counts=(0, 120, 0, 0), sum=60_000),
        batch_size=HistogramSample(bounds=(1, 2, 4), counts=(10, 10, 20, 0), sum=110),
        memory_usage_bytes=50_000_000, peak_memory_bytes=64_000_000, cpu_utilization_percent=37.5,
        queue_depth=3, pool_in_use_bytes=1024, pool_reserved_bytes=None,
    )
    base.update(kw)
    return MetricsSample(**base)


class FakeEngine:
    def __init__(self, s: MetricsSample) -> None:
        self.s = s

    def metrics_sample(self) -> MetricsSample:
        return self.s


def parse(text: bytes) -> dict[str, dict[tuple, float]]:
    """{sample name: {(labels...): value}} from the exposition, read by prometheus-client's parser."""
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def lbl(model="mnv2", backend="cpu_simd", **extra):
    return tuple(sorted({"model": model, "backend": backend, **extra}.items()))


def test_exposition_parses_and_matches_the_samples():
    a = sample()
    b = sample(model="resnet50", backend="openvino_npu", inference_count=7, inference_exec_count=7,
               pool_in_use_bytes=None, batch_size=None)
    got = parse(generate_latest([FakeEngine(a), lambda: b]))

    for s in (a, b):
        key = lbl(s.model, s.backend)
        assert got["edgecore_inference_count_total"][key] == s.inference_count
        assert got["edgecore_inference_exec_count_total"][key] == s.inference_exec_count
        assert got["edgecore_inference_request_success_total"][key] == s.request_success
        assert got["edgecore_inference_request_failure_total"][key] == s.request_failure
        assert got["edgecore_memory_usage_bytes"][key] == s.memory_usage_bytes
        assert got["edgecore_peak_memory_bytes"][key] == s.peak_memory_bytes
        assert got["edgecore_cpu_utilization_percent"][key] == s.cpu_utilization_percent
        assert got["edgecore_queue_depth"][key] == s.queue_depth
        for name in ("request_duration_us", "queue_duration_us", "compute_duration_us"):
            h = getattr(s, name)
            metric = f"edgecore_{name}"
            assert got[f"{metric}_count"][key] == h.count
            assert got[f"{metric}_sum"][key] == h.sum
            buckets = {float(dict(labels)["le"]): v for labels, v in got[f"{metric}_bucket"].items()
                       if dict(labels)["model"] == s.model}
            assert buckets == {100.0: h.counts[0], 1000.0: sum(h.counts[:2]), 10000.0: sum(h.counts[:3]),
                               float("inf"): h.count}

    assert got["edgecore_pool_in_use_bytes"] == {lbl(): 1024}  # None is not exposed
    assert "edgecore_pool_reserved_bytes" not in got
    assert set(dict(k)["model"] for k in got["edgecore_batch_size_count"]) == {"mnv2"}


def test_family_names_and_types():
    families = {f.name: f.type for f in text_string_to_metric_families(generate_latest([lambda: sample()]).decode())}
    assert families["edgecore_inference_count"] == "counter"
    assert families["edgecore_inference_exec_count"] == "counter"
    assert families["edgecore_request_duration_us"] == "histogram"
    assert families["edgecore_queue_duration_us"] == "histogram"
    assert families["edgecore_compute_duration_us"] == "histogram"
    assert families["edgecore_memory_usage_bytes"] == "gauge"
    assert families["edgecore_cpu_utilization_percent"] == "gauge"


def test_histogram_from_values_buckets():
    snap = HistogramSample.from_values((50, 100, 101, 1000, 5000, 20000), BOUNDS)
    assert snap.counts == (2, 2, 1, 1)  # 100 belongs to le="100", as in Prometheus
    assert snap.sum == 26251 and snap.count == 6
    assert snap.cumulative() == [("100", 2), ("1000", 4), ("10000", 5), ("+Inf", 6)]
    assert HistogramSample.from_values([1, 2000], BOUNDS).counts == (1, 0, 1, 0)
    assert HistogramSample.empty(BOUNDS).count == 0


def test_records_validate():
    with pytest.raises(ValueError, match="counts"):
        HistogramSample(bounds=(1, 2), counts=(1, 2))
    with pytest.raises(ValueError, match="increasing"):
        HistogramSample(bounds=(2, 1), counts=(0, 0, 0))
    with pytest.raises(ConfigurationError, match="inference_count"):
        MetricsSample(model="m", backend="b", inference_count=-1)
    with pytest.raises(ConfigurationError, match="increasing"):
        HistogramSample.from_values([], (5, 5))


def test_failing_provider_is_skipped_and_logged(caplog):
    def broken():
        raise RuntimeError("engine closed")

    with caplog.at_level(logging.ERROR, logger="edgecore"):
        got = parse(generate_latest([broken, lambda: sample()]))
    assert got["edgecore_inference_count_total"] == {lbl(): 120}
    assert "engine closed" in caplog.text


def test_engines_are_held_weakly_and_tracked():
    collector = EngineCollector()
    engine = FakeEngine(sample(model="weak"))
    collector.add(engine)
    assert [s.model for s in collector.samples()] == ["weak"]
    del engine
    gc.collect()
    assert collector.samples() == []

    tracked = FakeEngine(sample(model="tracked"))
    track(tracked)
    try:
        assert lbl("tracked") in parse(generate_latest())["edgecore_inference_count_total"]
    finally:
        untrack(tracked)
    assert lbl("tracked") not in parse(generate_latest()).get("edgecore_inference_count_total", {})


def test_registering_does_not_call_engines():
    calls = []
    make_registry([lambda: calls.append(1) or sample()])
    assert calls == []


def test_http_server_serves_metrics():
    engine = FakeEngine(sample())
    server, thread = start_http_server(0, addr="127.0.0.1", engines=[engine])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as resp:
            body = resp.read()
    finally:
        server.shutdown()
        server.server_close()
    assert parse(body)["edgecore_inference_exec_count_total"][lbl()] == 40


@pytest.mark.parametrize("call", [
    lambda: start_http_server(0, addr="127.0.0.1", engines=[]),
    lambda: generate_latest([]),
    lambda: make_registry([]),
])
def test_without_prometheus_client_the_error_names_the_extra(monkeypatch, call):
    # None in sys.modules makes "import prometheus_client" raise ImportError, as when it is absent.
    for name in [m for m in sys.modules if m == "prometheus_client" or m.startswith("prometheus_client.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(EdgecoreError, match=r"pip install 'edgecore\[metrics\]'") as info:
        call()
    assert not isinstance(info.value, ImportError) and isinstance(info.value.__cause__, ImportError)
