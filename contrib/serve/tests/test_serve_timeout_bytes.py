"""``--request-timeout-ms``: a request that runs past it is answered 504 / DEADLINE_EXCEEDED (the
backend's run stopped at the deadline), between good requests that succeed; and BYTES tensors on
cpu_simd (onnxruntime's plain ``session.run`` path for string models), over HTTP JSON, HTTP binary
and gRPC, compared with ``Engine.run`` on the same backend."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from edgecore import Engine, EngineConfig
from onnx import TensorProto as T
from onnx import helper, numpy_helper
from tritonclient.utils import InferenceServerException

TEXT = np.array([[b"hello", "w\u00f6rld".encode()], [b"", b"edge core"], [b"\x00nul", b"z" * 300]], dtype=object)
A = np.arange(4, dtype=np.float32).reshape(1, 4)


def _slow_model(path, iterations: int = 10**8, n: int = 64):
    """y = x @ I, ``iterations`` times in a Loop: minutes of work unless its run is stopped."""
    v = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("MatMul", ["y_in", "w"], ["y_out"])],
        "body",
        [v("i", T.INT64, []), v("cond_in", T.BOOL, []), v("y_in", T.FLOAT, None)],
        [v("cond_out", T.BOOL, []), v("y_out", T.FLOAT, None)],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)],
        "slow",
        [v("x", T.FLOAT, ["batch", n])],
        [v("y", T.FLOAT, ["batch", n])],
        initializer=[numpy_helper.from_array(np.array(iterations, np.int64), "trips"),
                     numpy_helper.from_array(np.array(True), "cond"),
                     numpy_helper.from_array(np.eye(n, dtype=np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _addsub_inputs(module, offset: float):
    inputs = []
    for name, value in (("a", A + offset), ("b", A)):
        tensor = module.InferInput(name, [1, 4], "FP32")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def _slow_inputs(module):
    tensor = module.InferInput("x", [1, 64], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 64), np.float32))
    return [tensor]


def test_request_timeout_answers_504_between_good_requests(models, start_server, tmp_path):
    slow = _slow_model(tmp_path / "slow.onnx")
    server = start_server([str(models["addsub"]), f"slow={slow}", "--request-timeout-ms", "1500"])
    http = httpclient.InferenceServerClient(url=server.http_url)
    grpc = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        for turn, (module, client, status) in enumerate(
            ((httpclient, http, "504"), (grpcclient, grpc, "StatusCode.DEADLINE_EXCEEDED"))
        ):
            result = client.infer("addsub", _addsub_inputs(module, turn))
            np.testing.assert_array_equal(result.as_numpy("sum"), A + turn + A)
            with pytest.raises(InferenceServerException) as info:
                client.infer("slow", _slow_inputs(module))
            assert info.value.status() == status, (info.value.status(), info.value.message())
            assert "1500" in info.value.message() or "deadline" in info.value.message()
            result = client.infer("addsub", _addsub_inputs(module, turn + 0.5))
            np.testing.assert_array_equal(result.as_numpy("sum"), A + turn + 0.5 + A)
        stats = http.get_inference_statistics("slow")["model_stats"][0]["inference_stats"]
        assert stats["fail"]["count"] == 2 and stats["success"]["count"] == 0
    finally:
        http.close()
        grpc.close()
    assert server.stop() == 0


@pytest.fixture(scope="module")
def cpu_simd_engine(models):
    config = EngineConfig(backend="cpu_simd")
    try:
        engine = Engine(config)
        engine.load(str(models["strid"]))
    except Exception as exc:  # noqa: BLE001 - the plugin or onnxruntime is absent
        pytest.skip(f"cpu_simd cannot run the string model here: {exc}")
    with engine:
        yield engine


def _expected(engine) -> np.ndarray:
    out = engine.run({"s": np.vectorize(lambda b: b.decode(), otypes=[object])(TEXT)})["out"]
    return np.vectorize(lambda s: s.encode(), otypes=[object])(out)


def test_bytes_on_cpu_simd_over_http_and_grpc(models, cpu_simd_engine, start_server):
    server = start_server([str(models["strid"]), "--backend", "cpu_simd"])
    expected = _expected(cpu_simd_engine)
    http = httpclient.InferenceServerClient(url=server.http_url)
    grpc = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        assert http.get_model_config("strid")["backend"] == "cpu_simd"
        for binary in (False, True):
            tensor = httpclient.InferInput("s", list(TEXT.shape), "BYTES")
            tensor.set_data_from_numpy(TEXT, binary_data=binary)
            out = httpclient.InferRequestedOutput("out", binary_data=binary)
            got = http.infer("strid", [tensor], outputs=[out]).as_numpy("out")
            got = np.vectorize(lambda v: v if isinstance(v, bytes) else v.encode(), otypes=[object])(got)
            np.testing.assert_array_equal(got, expected, err_msg=f"binary={binary}")
        tensor = grpcclient.InferInput("s", list(TEXT.shape), "BYTES")
        tensor.set_data_from_numpy(TEXT)
        np.testing.assert_array_equal(grpc.infer("strid", [tensor]).as_numpy("out"), expected)
    finally:
        http.close()
        grpc.close()
    assert server.stop() == 0
