"""Bad requests, each sent between good ones: each is answered 4xx with ``{"error": ...}`` naming
what was wrong, and the good requests around it succeed (nothing else is affected)."""

from __future__ import annotations

import gzip
import http.client
import json
import struct

import grpc
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

A = np.arange(4, dtype=np.float32).reshape(1, 4)


def _post(server, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _json_body(a_datatype="FP32", a_shape=(1, 4), a_data=None, names=("a", "b")) -> bytes:
    data = [0.0, 1.0, 2.0, 3.0] if a_data is None else a_data
    inputs = [{"name": names[0], "shape": list(a_shape), "datatype": a_datatype, "data": data}]
    if len(names) > 1:
        inputs.append({"name": names[1], "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]})
    return json.dumps({"inputs": inputs}).encode()


def _binary_body(size_delta: int = 0, header_delta: int = 0) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": [
        {"name": "a", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16 + size_delta}},
        {"name": "b", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
    ]}).encode()
    blob = A.tobytes() + A.tobytes()
    return header + blob, {"Inference-Header-Content-Length": str(len(header) + header_delta)}


BAD_REQUESTS = {
    "malformed json": ("/v2/models/addsub/infer", b'{"inputs": [', {}, 400, "malformed JSON"),
    "not an object": ("/v2/models/addsub/infer", b"[1, 2]", {}, 400, "JSON object"),
    "wrong datatype": ("/v2/models/addsub/infer", _json_body(a_datatype="INT32", a_data=[0, 1, 2, 3]), {}, 400,
                       "expected datatype FP32"),
    "unknown datatype": ("/v2/models/addsub/infer", _json_body(a_datatype="FP8"), {}, 400, "unknown datatype"),
    "wrong shape": ("/v2/models/addsub/infer", _json_body(a_shape=(1, 5), a_data=[0, 1, 2, 3, 4]), {}, 400, "a"),
    "data disagrees with shape": ("/v2/models/addsub/infer", _json_body(a_shape=(2, 4)), {}, 400, "8 elements"),
    "strings as FP32": ("/v2/models/addsub/infer", _json_body(a_data=["x", "y", "z", "w"]), {}, 400, "numbers"),
    "unknown input": ("/v2/models/addsub/infer", _json_body(names=("a", "c")), {}, 400, "no input 'c'"),
    "missing input": ("/v2/models/addsub/infer", _json_body(names=("a",)), {}, 400, "b"),
    "unknown model": ("/v2/models/nope/infer", _json_body(), {}, 404, "unknown model 'nope'"),
    "unknown version": ("/v2/models/addsub/versions/3/infer", _json_body(), {}, 404, "unknown version"),
    "header length beyond body": ("/v2/models/addsub/infer", *_binary_body(header_delta=10_000), 400,
                                  "Inference-Header-Content-Length"),
    "binary size disagrees with shape": ("/v2/models/addsub/infer", *_binary_body(size_delta=-4), 400,
                                         "disagree with shape"),
    "bad gzip": ("/v2/models/addsub/infer", b"not gzip at all", {"Content-Encoding": "gzip"}, 400, "decompress"),
    "body over the limit": ("/v2/models/addsub/infer", b"{}", {"Content-Length": str(1 << 30)}, 413, "limit"),
    "too many elements": ("/v2/models/addsub/infer", _json_body(a_shape=(8192, 8192), a_data=[]), {}, 400,
                          "more than the server's limit"),
    "negative dimension": ("/v2/models/addsub/infer", _json_body(a_shape=(-1, 4)), {}, 400, "non-negative"),
    "BYTES for an FP32 input": ("/v2/models/addsub/infer", _json_body(a_datatype="BYTES", a_data=["a", "b", "c", "d"]),
                                {}, 400, "expected datatype FP32"),
    "input without a shape": ("/v2/models/addsub/infer", json.dumps({"inputs": [{"name": "a", "datatype": "FP32",
                                                                             "data": [1]}]}).encode(), {}, 400, "shape"),
    "unknown output": ("/v2/models/addsub/infer",
                       json.dumps({**json.loads(_json_body()), "outputs": [{"name": "nope"}]}).encode(), {}, 400,
                       "no output 'nope'"),
    "header length not a number": ("/v2/models/addsub/infer", _binary_body()[0],
                                   {"Inference-Header-Content-Length": "twelve"}, 400,
                                   "Inference-Header-Content-Length"),
    "unknown endpoint": ("/v2/models/addsub/explode", b"{}", {}, 404, "no endpoint"),
    "wrong method": ("/v2/health/live", b"{}", {}, 405, "not allowed"),
}


def _good(client: httpclient.InferenceServerClient, offset: float) -> None:
    inputs = []
    for name, value in (("a", A + offset), ("b", A)):
        tensor = httpclient.InferInput(name, [1, 4], "FP32")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    result = client.infer("addsub", inputs)
    np.testing.assert_array_equal(result.as_numpy("sum"), A + offset + A)


def test_each_bad_request_between_good_ones(server):
    client = httpclient.InferenceServerClient(url=server.http_url)
    try:
        for position, (label, (path, body, headers, status, words)) in enumerate(BAD_REQUESTS.items()):
            _good(client, position)
            got_status, got_body = _post(server, path, body, headers)
            assert got_status == status, (label, got_status, got_body)
            doc = json.loads(got_body)
            assert set(doc) == {"error"}, (label, doc)
            assert words in doc["error"], (label, doc["error"])
            _good(client, position + 0.5)
    finally:
        client.close()


def test_bytes_length_prefix_errors(reference_server):
    """A BYTES element declaring more bytes than remain, and trailing bytes: both 400."""
    token = {"Authorization": "Bearer s3cret"}
    elements = struct.pack("<I", 1) + b"x" + struct.pack("<I", 99) + b"y"
    header = json.dumps({"inputs": [
        {"name": "s", "shape": [1, 2], "datatype": "BYTES", "parameters": {"binary_data_size": len(elements)}}
    ]}).encode()
    status, body = _post(reference_server, "/v2/models/strid/infer", header + elements,
                         {"Inference-Header-Content-Length": str(len(header)), **token})
    assert status == 400 and "declares 99 bytes" in json.loads(body)["error"]
    good = struct.pack("<I", 1) + b"x" + struct.pack("<I", 1) + b"y"
    header = json.dumps({"inputs": [
        {"name": "s", "shape": [1, 2], "datatype": "BYTES", "parameters": {"binary_data_size": len(good)}}
    ]}).encode()
    status, body = _post(reference_server, "/v2/models/strid/infer", gzip.compress(header + good),
                         {"Inference-Header-Content-Length": str(len(header)), "Content-Encoding": "gzip", **token})
    assert status == 200, body
    assert json.loads(body)["outputs"][0]["data"] == ["x", "y"]


def test_grpc_bad_requests_between_good_ones(server):
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def good() -> None:
            request = pb.ModelInferRequest(model_name="addsub")
            for name in ("a", "b"):
                request.inputs.add(name=name, datatype="FP32", shape=[1, 4])
                request.raw_input_contents.append(A.tobytes())
            response = stub.ModelInfer(request, timeout=30)
            np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], np.float32), (A + A).ravel())

        bad = []
        r = pb.ModelInferRequest(model_name="addsub")  # two inputs, one raw entry
        for name in ("a", "b"):
            r.inputs.add(name=name, datatype="FP32", shape=[1, 4])
        r.raw_input_contents.append(A.tobytes())
        bad.append((r, grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents"))
        r = pb.ModelInferRequest(model_name="addsub")  # raw size disagrees with the shape
        for name in ("a", "b"):
            r.inputs.add(name=name, datatype="FP32", shape=[1, 4])
            r.raw_input_contents.append(A.tobytes()[:12])
        bad.append((r, grpc.StatusCode.INVALID_ARGUMENT, "disagree with shape"))
        r = pb.ModelInferRequest(model_name="addsub", model_version="5")
        bad.append((r, grpc.StatusCode.NOT_FOUND, "unknown version"))
        r = pb.ModelInferRequest(model_name="nope")
        r.inputs.add(name="a", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([0, 1, 2, 3])
        bad.append((r, grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"))
        r = pb.ModelInferRequest(model_name="addsub")  # INT32 for an FP32 input
        for name in ("a", "b"):
            r.inputs.add(name=name, datatype="INT32", shape=[1, 4]).contents.int_contents.extend([0, 1, 2, 3])
        bad.append((r, grpc.StatusCode.INVALID_ARGUMENT, "expected datatype FP32"))
        r = pb.ModelInferRequest(model_name="addsub")  # typed contents: 3 values for a [1, 4] shape
        for name in ("a", "b"):
            r.inputs.add(name=name, datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([0, 1, 2])
        bad.append((r, grpc.StatusCode.INVALID_ARGUMENT, "'a'"))
        r = pb.ModelInferRequest(model_name="addsub")  # an input the model does not have
        for name in ("a", "c"):
            r.inputs.add(name=name, datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([0, 1, 2, 3])
        bad.append((r, grpc.StatusCode.INVALID_ARGUMENT, "no input 'c'"))
        r = pb.ModelInferRequest(model_name="addsub")  # more elements than the server takes
        r.inputs.add(name="a", datatype="FP32", shape=[8192, 8192])
        bad.append((r, grpc.StatusCode.INVALID_ARGUMENT, "more than the server's limit"))
        r = pb.ModelInferRequest(model_name="addsub")
        bad.append((r, grpc.StatusCode.INVALID_ARGUMENT, "no inputs"))
        r = pb.ModelInferRequest(model_name="addsub")  # an unknown datatype
        for name in ("a", "b"):
            r.inputs.add(name=name, datatype="FP8", shape=[1, 4])
            r.raw_input_contents.append(A.tobytes())
        bad.append((r, grpc.StatusCode.INVALID_ARGUMENT, "FP8"))
        for request, code, words in bad:
            good()
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request, timeout=30)
            assert info.value.code() == code and words in info.value.details()
            good()
