"""The HTTP front end, driven by the real tritonclient.http and tritonclient.http.aio clients;
outputs compared with ``Engine.run`` on the same inputs (the same model, in this process)."""

from __future__ import annotations

import asyncio
import gzip
import json
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
from edgecore import Engine, EngineConfig
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def engines(models):
    with Engine(EngineConfig()) as addsub, Engine(EngineConfig()) as mul2, Engine(EngineConfig()) as digits:
        addsub.load(str(models["addsub"]))
        mul2.load(str(models["mul2"]))
        digits.load("zoo:digits_cnn")
        yield {"addsub": addsub, "twice": mul2, "digits_cnn": digits}


@pytest.fixture
def client(server):
    c = httpclient.InferenceServerClient(url=server.http_url)
    yield c
    c.close()


def _inputs(a: np.ndarray, b: np.ndarray, binary: bool) -> list[httpclient.InferInput]:
    out = []
    for name, value in (("a", a), ("b", b)):
        tensor = httpclient.InferInput(name, list(value.shape), "FP32")
        tensor.set_data_from_numpy(value, binary_data=binary)
        out.append(tensor)
    return out


def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "edgecore"
    assert "binary_tensor_data" in meta["extensions"]
    assert client.is_model_ready("addsub")
    assert client.is_model_ready("addsub", "1")
    assert not client.is_model_ready("no_such_model")


def test_model_metadata_and_config(client):
    meta = client.get_model_metadata("addsub")
    assert meta["name"] == "addsub" and meta["versions"] == ["1"]
    assert meta["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "b", "datatype": "FP32", "shape": [-1, 4]},
    ]
    assert [o["name"] for o in meta["outputs"]] == ["sum", "diff"]
    assert client.get_model_metadata("twice", "1")["inputs"][0]["datatype"] == "INT64"
    config = client.get_model_config("addsub")
    assert config["max_batch_size"] == 8
    assert config["input"][0] == {"name": "a", "data_type": "TYPE_FP32", "dims": [4]}
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 2000


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_fp32_equals_engine_run(client, engines, binary):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 4), dtype=np.float32), rng.standard_normal((3, 4), dtype=np.float32)
    outputs = [httpclient.InferRequestedOutput("sum", binary_data=binary), httpclient.InferRequestedOutput("diff")]
    result = client.infer("addsub", _inputs(a, b, binary), outputs=outputs, request_id="req-7")
    expected = engines["addsub"].run({"a": a, "b": b})
    np.testing.assert_array_equal(result.as_numpy("sum"), expected["sum"])
    np.testing.assert_array_equal(result.as_numpy("diff"), expected["diff"])
    response = result.get_response()
    assert response["id"] == "req-7"
    assert response["model_name"] == "addsub" and response["model_version"] == "1"


def test_infer_int64_and_zoo_model(client, engines):
    x = np.arange(-6, 6, dtype=np.int64).reshape(4, 3) * 10**12
    tensor = httpclient.InferInput("x", [4, 3], "INT64")
    tensor.set_data_from_numpy(x, binary_data=False)
    result = client.infer("twice", [tensor])
    np.testing.assert_array_equal(result.as_numpy("y"), engines["twice"].run({"x": x})["y"])

    image = np.random.default_rng(2).standard_normal((2, 1, 8, 8), dtype=np.float32)
    tensor = httpclient.InferInput("input", [2, 1, 8, 8], "FP32")
    tensor.set_data_from_numpy(image)
    result = client.infer("digits_cnn", [tensor], model_version="1")
    np.testing.assert_allclose(result.as_numpy("logits"), engines["digits_cnn"].run({"input": image})["logits"],
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_and_response(client, engines, algorithm):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 4), dtype=np.float32), rng.standard_normal((2, 4), dtype=np.float32)
    result = client.infer(
        "addsub", _inputs(a, b, True),
        request_compression_algorithm=algorithm, response_compression_algorithm=algorithm,
    )
    np.testing.assert_array_equal(result.as_numpy("sum"), engines["addsub"].run({"a": a, "b": b})["sum"])


def test_gzip_response_with_curl_like_client(server):
    """A plain HTTP client (urllib) gets a gzip body when it asks for one, and JSON tensors in it."""
    body = json.dumps({"inputs": [
        {"name": "a", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
        {"name": "b", "shape": [1, 4], "datatype": "FP32", "data": [[0.5, 0.5, 0.5, 0.5]]},
    ]}).encode()
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/models/addsub/infer", data=gzip.compress(body), method="POST",
        headers={"Content-Encoding": "gzip", "Accept-Encoding": "gzip", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        doc = json.loads(gzip.decompress(response.read()))
    assert doc["outputs"][0] == {"name": "sum", "datatype": "FP32", "shape": [1, 4], "data": [1.5, 2.5, 3.5, 4.5]}


def test_async_client_concurrent_requests_share_batches(server, engines):
    rng = np.random.default_rng(4)
    pairs = [(rng.standard_normal((1, 4), dtype=np.float32), rng.standard_normal((1, 4), dtype=np.float32))
             for _ in range(24)]

    async def main():
        client = aiohttpclient.InferenceServerClient(url=server.http_url)
        try:
            assert await client.is_server_ready()
            meta = await client.get_model_metadata("addsub")
            assert meta["name"] == "addsub"

            async def one(a, b):
                inputs = []
                for name, value in (("a", a), ("b", b)):
                    tensor = aiohttpclient.InferInput(name, [1, 4], "FP32")
                    tensor.set_data_from_numpy(value)
                    inputs.append(tensor)
                return await client.infer("addsub", inputs)

            results = await asyncio.gather(*(one(a, b) for a, b in pairs))
            # compressed both ways, and an error as InferenceServerException with its status
            a, b = pairs[0]
            inputs = []
            for name, value in (("a", a), ("b", b)):
                tensor = aiohttpclient.InferInput(name, [1, 4], "FP32")
                tensor.set_data_from_numpy(value)
                inputs.append(tensor)
            zipped = await client.infer("addsub", inputs, request_compression_algorithm="gzip",
                                        response_compression_algorithm="gzip")
            with pytest.raises(InferenceServerException) as info:
                await client.infer("no_such_model", inputs)
            assert info.value.status() == "404" and "no_such_model" in info.value.message()
            return results, zipped
        finally:
            await client.close()

    results, zipped = asyncio.run(main())
    for (a, b), result in zip(pairs, results):
        np.testing.assert_array_equal(result.as_numpy("sum"), engines["addsub"].run({"a": a, "b": b})["sum"])
    a, b = pairs[0]
    np.testing.assert_array_equal(zipped.as_numpy("sum"), engines["addsub"].run({"a": a, "b": b})["sum"])


def test_statistics(client):
    a = np.ones((2, 4), dtype=np.float32)
    client.infer("addsub", _inputs(a, a, True))
    stats = client.get_inference_statistics("addsub")["model_stats"]
    assert len(stats) == 1
    entry = stats[0]
    assert entry["name"] == "addsub" and entry["version"] == "1"
    infer = entry["inference_stats"]
    assert infer["success"]["count"] >= 1 and infer["success"]["ns"] > 0
    assert infer["compute_infer"]["count"] >= 1
    assert entry["execution_count"] >= 1
    assert entry["inference_count"] >= infer["success"]["count"]  # items: a request of batch 2 counts 2
    assert sum(b["compute_infer"]["count"] for b in entry["batch_stats"]) == entry["execution_count"]
    assert entry["last_inference"] > 0
    names = {s["name"] for s in client.get_inference_statistics()["model_stats"]}
    assert names == {"addsub", "twice", "digits_cnn"}


def test_errors_reach_the_client_with_status(client):
    a = np.ones((1, 4), dtype=np.float32)
    with pytest.raises(InferenceServerException) as info:
        client.infer("no_such_model", _inputs(a, a, True))
    assert info.value.status() == "404" and "no_such_model" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.infer("addsub", _inputs(a, a, True), model_version="9")
    assert info.value.status() == "404" and "version" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("no_such_model")
    assert info.value.status() == "404"
    wrong = httpclient.InferInput("x", [1, 3], "FP32")  # twice takes INT64
    wrong.set_data_from_numpy(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("twice", [wrong])
    assert info.value.status() == "400" and "INT64" in info.value.message()


def test_metrics(server, client):
    a = np.ones((1, 4), dtype=np.float32)
    client.infer("addsub", _inputs(a, a, True))
    with urllib.request.urlopen(f"http://{server.http_url}/metrics", timeout=30) as response:
        text = response.read().decode()
    assert 'edgecore_server_requests_total{protocol="http",endpoint="infer",code="200"}' in text
    assert "edgecore_inference_count" in text and 'model="addsub"' in text


def test_cli_help_lists_serve():
    from edgecore.cli import build_parser

    assert "serve" in build_parser().format_help()
