"""The gRPC front end, driven by the real tritonclient.grpc client (unary and one stream);
outputs compared with ``Engine.run`` on the same inputs."""

from __future__ import annotations

import queue

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from edgecore import Engine, EngineConfig
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def engines(models):
    with Engine(EngineConfig()) as addsub, Engine(EngineConfig()) as mul2:
        addsub.load(str(models["addsub"]))
        mul2.load(str(models["mul2"]))
        yield {"addsub": addsub, "twice": mul2}


@pytest.fixture
def client(server):
    c = grpcclient.InferenceServerClient(url=server.grpc_url)
    yield c
    c.close()


def _inputs(a: np.ndarray, b: np.ndarray) -> list[grpcclient.InferInput]:
    out = []
    for name, value in (("a", a), ("b", b)):
        tensor = grpcclient.InferInput(name, list(value.shape), "FP32")
        tensor.set_data_from_numpy(value)
        out.append(tensor)
    return out


def test_health_metadata_config(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("addsub")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "edgecore" and "statistics" in meta["extensions"]
    model = client.get_model_metadata("addsub", as_json=True)
    assert model["inputs"][0] == {"name": "a", "datatype": "FP32", "shape": ["-1", "4"]}  # int64 as JSON strings
    config = client.get_model_config("twice", as_json=True)["config"]
    assert config["max_batch_size"] == 8
    assert config["input"][0]["data_type"] == "TYPE_INT64"


def test_infer_fp32_and_int64_equal_engine_run(client, engines):
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((3, 4), dtype=np.float32), rng.standard_normal((3, 4), dtype=np.float32)
    result = client.infer("addsub", _inputs(a, b), request_id="g-1",
                          outputs=[grpcclient.InferRequestedOutput("diff")])
    np.testing.assert_array_equal(result.as_numpy("diff"), engines["addsub"].run({"a": a, "b": b})["diff"])
    assert result.as_numpy("sum") is None  # only what was asked
    assert result.get_response().id == "g-1"

    x = np.arange(6, dtype=np.int64).reshape(2, 3) - 3
    tensor = grpcclient.InferInput("x", [2, 3], "INT64")
    tensor.set_data_from_numpy(x)
    np.testing.assert_array_equal(client.infer("twice", [tensor]).as_numpy("y"), engines["twice"].run({"x": x})["y"])
    for algorithm in ("gzip", "deflate"):  # gRPC's own message compression
        result = client.infer("twice", [tensor], compression_algorithm=algorithm)
        np.testing.assert_array_equal(result.as_numpy("y"), engines["twice"].run({"x": x})["y"])


def test_typed_contents(server, engines):
    """A request with typed ``contents`` instead of raw bytes (what other clients send)."""
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="twice", id="typed")
        tensor = request.inputs.add(name="x", datatype="INT64", shape=[1, 3])
        tensor.contents.int64_contents.extend([7, -8, 9])
        response = stub.ModelInfer(request, timeout=30)
    assert response.id == "typed" and list(response.outputs[0].shape) == [1, 3]
    got = np.frombuffer(response.raw_output_contents[0], dtype=np.int64).reshape(1, 3)
    np.testing.assert_array_equal(got, engines["twice"].run({"x": np.array([[7, -8, 9]], dtype=np.int64)})["y"])


def test_stream_infer(client, engines):
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    rng = np.random.default_rng(6)
    sent = {}
    try:
        for i in range(8):
            a, b = rng.standard_normal((1, 4), dtype=np.float32), rng.standard_normal((1, 4), dtype=np.float32)
            sent[f"s{i}"] = (a, b)
            client.async_stream_infer("addsub", _inputs(a, b), request_id=f"s{i}")
        bad = grpcclient.InferInput("a", [1, 4], "FP32")
        bad.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        client.async_stream_infer("addsub", [bad], request_id="missing-b")
        got, errors = {}, []
        for _ in range(9):
            result, error = answers.get(timeout=30)
            if error is not None:
                errors.append(error)
            else:
                got[result.get_response().id] = result
    finally:
        client.stop_stream()
    assert len(errors) == 1 and "b" in errors[0].message()
    assert set(got) == set(sent)
    for rid, (a, b) in sent.items():
        np.testing.assert_array_equal(got[rid].as_numpy("sum"), engines["addsub"].run({"a": a, "b": b})["sum"])


def test_statistics(client):
    a = np.ones((1, 4), dtype=np.float32)
    client.infer("addsub", _inputs(a, a))
    stats = client.get_inference_statistics("addsub", as_json=True)["model_stats"][0]
    assert stats["name"] == "addsub"
    assert int(stats["inference_stats"]["success"]["count"]) >= 1
    assert int(stats["execution_count"]) >= 1


def test_errors_have_grpc_status(client):
    a = np.ones((1, 4), dtype=np.float32)
    with pytest.raises(InferenceServerException) as info:
        client.infer("no_such_model", _inputs(a, a))
    assert info.value.status() == "StatusCode.NOT_FOUND"
    wrong = grpcclient.InferInput("x", [1, 4], "INT64")  # twice takes [batch, 3]
    wrong.set_data_from_numpy(np.ones((1, 4), dtype=np.int64))
    with pytest.raises(InferenceServerException) as info:
        client.infer("twice", [wrong])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    # the server keeps serving
    np.testing.assert_array_equal(client.infer("addsub", _inputs(a, a)).as_numpy("sum"), a + a)
