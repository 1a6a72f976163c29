"""Scheduler traffic (dynamic batching, several instances) through the openvino backend."""

from __future__ import annotations

import numpy as np

from edgecore import Engine, EngineConfig


def test_batched_concurrent_requests_match_direct_runs(zoo_graph, image_feeds):
    graph = zoo_graph("resnet_tiny")
    requests = [image_feeds(graph, 1, seed=i) for i in range(24)]
    with Engine(EngineConfig(backend="openvino", device="cpu", num_threads=2)).load(graph) as direct:
        expected = [direct.run(f)["logits"].copy() for f in requests]
    config = EngineConfig(backend="openvino", device="cpu", instances=2, max_batch_size=4, max_queue_delay_us=2000)
    with Engine(config).load(graph) as engine:
        futures = [engine.submit(f) for f in requests]
        results = [f.result(timeout=60)["logits"].copy() for f in futures]
        stats = engine.stats()
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert stats.total_inferences == len(requests) and stats.failed_inferences == 0


def test_throughput_hint_serves_threads_on_streams(zoo_graph, image_feeds):
    import threading

    graph = zoo_graph("digits_cnn")
    options = {"performance_hint": "throughput", "num_streams": 2}
    with Engine(EngineConfig(backend="openvino", device="cpu", num_threads=2, custom_options=options)).load(graph) as engine:
        assert engine.compiled.optimal_instances >= 2
        feeds = [image_feeds(graph, 1 + i % 4, seed=i) for i in range(16)]
        expected = [engine.run(f)["logits"] for f in feeds]
        results: dict[int, np.ndarray] = {}

        def worker(k: int) -> None:
            for i in range(k, len(feeds), 4):
                results[i] = engine.run(feeds[i])["logits"]

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, want in enumerate(expected):
        np.testing.assert_allclose(results[i], want, rtol=1e-5, atol=1e-6)
