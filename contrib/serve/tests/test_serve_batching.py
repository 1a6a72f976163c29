"""Concurrent requests of both protocols share dynamic batches: tritonclient.http.aio and
tritonclient.grpc (``async_infer``) requests sent together to one model are run in batches larger
than one, as the statistics show over HTTP and gRPC alike (``inference_count / execution_count``,
the average dynamic batch; ``batch_stats`` per batch size), and every answer is its own request's,
as ``Engine.run`` computes it."""

from __future__ import annotations

import asyncio
import queue

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http.aio as aiohttpclient
from edgecore import Engine, EngineConfig

PER_PROTOCOL = 8


def _inputs(module, a: np.ndarray, b: np.ndarray) -> list:
    inputs = []
    for name, value in (("a", a), ("b", b)):
        tensor = module.InferInput(name, list(value.shape), "FP32")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def test_http_aio_and_grpc_requests_share_batches(models, start_server):
    # a long batching window (a full batch of 16 goes at once): requests sent together meet in it
    server = start_server([str(models["addsub"]), "--max-queue-delay-us", "200000", "--max-batch-size", "16"])
    rng = np.random.default_rng(11)
    pairs = [(rng.standard_normal((1, 4), dtype=np.float32), rng.standard_normal((1, 4), dtype=np.float32))
             for _ in range(2 * PER_PROTOCOL)]
    grpc = grpcclient.InferenceServerClient(url=server.grpc_url)
    answers: queue.Queue = queue.Queue()
    try:
        for i, (a, b) in enumerate(pairs[:PER_PROTOCOL]):
            grpc.async_infer("addsub", _inputs(grpcclient, a, b), request_id=f"g{i}",
                             callback=lambda result, error: answers.put((result, error)))

        async def http_requests():
            client = aiohttpclient.InferenceServerClient(url=server.http_url)
            try:
                return await asyncio.gather(*(
                    client.infer("addsub", _inputs(aiohttpclient, a, b), request_id=f"h{i}")
                    for i, (a, b) in enumerate(pairs[PER_PROTOCOL:])
                ))
            finally:
                await client.close()

        http_results = asyncio.run(http_requests())
        grpc_results = {}
        for _ in range(PER_PROTOCOL):
            result, error = answers.get(timeout=60)
            assert error is None, error
            grpc_results[result.get_response().id] = result

        with Engine(EngineConfig()) as engine:
            engine.load(str(models["addsub"]))
            for i, (a, b) in enumerate(pairs[:PER_PROTOCOL]):
                np.testing.assert_array_equal(grpc_results[f"g{i}"].as_numpy("sum"), engine.run({"a": a, "b": b})["sum"])
            for (a, b), result in zip(pairs[PER_PROTOCOL:], http_results):
                np.testing.assert_array_equal(result.as_numpy("sum"), engine.run({"a": a, "b": b})["sum"])

        stats = grpc.get_inference_statistics("addsub", as_json=True)["model_stats"][0]
        requests = int(stats["inference_stats"]["success"]["count"])
        executions = int(stats["execution_count"])
        assert requests == int(stats["inference_count"]) == 2 * PER_PROTOCOL  # one item each
        assert requests / executions > 1, stats  # the average dynamic batch
        sizes = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["batch_stats"]}
        assert sum(sizes.values()) == executions and max(sizes) > 1, sizes
        assert sum(size * count for size, count in sizes.items()) == requests, sizes
    finally:
        grpc.close()
    assert server.stop() == 0
