"""The framework-free protocol module against an independent reference: tritonclient's own request
encoder (``generate_request_body``), response parser (``parse_response_body``) and serializers."""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest
import tritonclient.http as httpclient
from edgecore import errors as ec
from edgecore.stats import EngineStats
from tritonclient.utils import serialize_byte_tensor

from edgecore_serve.protocol import (
    DATATYPES,
    BadRequest,
    InferResponse,
    Limits,
    NotImplemented_,
    OutputTensor,
    PayloadTooLarge,
    array_from_raw,
    datatype_of,
    deserialize_bytes,
    raw_bytes,
    serialize_bytes,
    status_of,
)
from edgecore_serve.protocol.documents import model_statistics
from edgecore_serve.protocol.http_codec import (
    compress,
    decode_infer_request,
    decompress,
    encode_infer_response,
    parse_header_length,
)

RNG = np.random.default_rng(0)


def _sample(datatype: str, shape=(2, 3)) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([b"a", b"", b"\xff\x00", "t\u00e9xt".encode(), b"xy" * 40, b"z"], dtype=object).reshape(shape)
    if datatype == "BOOL":
        return RNG.integers(0, 2, shape).astype(bool)
    dtype = DATATYPES[datatype]
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return RNG.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return RNG.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_raw_round_trip(datatype):
    array = _sample(datatype)
    if datatype != "BF16":
        assert datatype_of(array) == datatype
    blob = bytes(raw_bytes(array, datatype))
    back = array_from_raw(blob, datatype, array.shape, "x")
    np.testing.assert_array_equal(back, array)


def test_bytes_wire_form_matches_tritonclient():
    array = _sample("BYTES")
    reference = serialize_byte_tensor(array)
    assert serialize_bytes(array) == (reference.item() if reference.dtype == object else reference.tobytes())
    back = deserialize_bytes(serialize_bytes(array), array.size, "x")
    assert list(back) == list(array.reshape(-1))


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_decode_what_tritonclient_encodes(datatype, binary):
    if datatype == "BF16" and not binary:
        pytest.skip("tritonclient sends BF16 in binary only")
    array = _sample(datatype)
    if datatype == "BYTES" and not binary:
        array = np.array([b"a", b"b c", "\u00e9".encode(), b"", b"x", b"yz"], dtype=object).reshape(2, 3)
    tensor = httpclient.InferInput("x", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput("y", binary_data=False)]
    body, header_length = httpclient.InferenceServerClient.generate_request_body(
        [tensor], outputs=outputs, request_id="r9"
    )
    request = decode_infer_request(body, header_length, model_name="m")
    assert request.id == "r9" and request.outputs[0].name == "y" and request.outputs[0].binary is False
    decoded = request.inputs[0]
    assert (decoded.name, decoded.datatype, decoded.shape) == ("x", datatype, array.shape)
    if datatype in ("FP16", "FP32", "FP64") and not binary:
        np.testing.assert_allclose(decoded.data, array, rtol=1e-6)  # JSON carries decimal text
    else:
        np.testing.assert_array_equal(decoded.data, array)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", ["FP32", "INT64", "BOOL", "BYTES", "FP16", "UINT8"])
def test_tritonclient_parses_what_we_encode(datatype, binary):
    array = _sample(datatype)
    if datatype == "BYTES" and not binary:
        array = np.array(["a", "b", "c", "\u00e9", "", "xyz"], dtype=object).reshape(2, 3)
    response = InferResponse(
        model_name="m", model_version="1", id="abc",
        outputs=[OutputTensor(name="y", datatype=datatype, shape=array.shape, data=array, binary=binary)],
    )
    body, header_length = encode_infer_response(response)
    assert (header_length is not None) == binary
    for encoding in (None, "gzip", "deflate"):
        wire, used = compress(body, encoding)
        assert used == encoding
        result = httpclient.InferenceServerClient.parse_response_body(
            wire, header_length=header_length, content_encoding=used
        )
        got = result.as_numpy("y")
        expected = array
        if datatype == "BYTES":
            expected = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])(array)
            got = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])(got)
        np.testing.assert_array_equal(got, expected)
        assert result.get_response()["id"] == "abc"


def test_nested_json_data_and_request_defaults():
    body = json.dumps({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]}],
                       "parameters": {"binary_data_output": True}}).encode()
    request = decode_infer_request(body, None, model_name="m", model_version="2")
    np.testing.assert_array_equal(request.inputs[0].data, np.array([[1, 2], [3, 4]], np.int32))
    assert request.binary_output and request.model_version == "2" and request.outputs == ()


def _json(inputs, **extra) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


BAD = [
    (b"{", None, "malformed JSON"),
    (b'"x"', None, "JSON object"),
    (_json([]), None, "non-empty 'inputs'"),
    (_json([{"shape": [1], "datatype": "FP32", "data": [1]}]), None, "'name'"),
    (_json([{"name": "x", "shape": [1], "datatype": "FP99", "data": [1]}]), None, "unknown datatype"),
    (_json([{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]), None, "non-negative"),
    (_json([{"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}]), None, "2 elements"),
    (_json([{"name": "x", "shape": [2], "datatype": "FP32", "data": [[1], 2, [3]]}]), None, "3"),
    (_json([{"name": "x", "shape": [1], "datatype": "INT8", "data": [300]}]), None, "do not fit INT8"),
    (_json([{"name": "x", "shape": [1], "datatype": "INT32", "data": [1.5]}]), None, "integers"),
    (_json([{"name": "x", "shape": [1], "datatype": "BOOL", "data": [1]}]), None, "booleans"),
    (_json([{"name": "x", "shape": [1], "datatype": "BYTES", "data": [1]}]), None, "strings"),
    (_json([{"name": "x", "shape": [1], "datatype": "FP32"}]), None, "neither 'data'"),
    (_json([{"name": "x", "shape": [1 << 20, 1 << 20], "datatype": "FP32", "data": []}]), None, "limit"),
    (_json([{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], id=5), None, "'id'"),
    (_json([{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]), None,
     "goes past the binary data"),
]


@pytest.mark.parametrize("body, header_length, words", BAD, ids=[w for _, _, w in BAD])
def test_bad_requests_name_what_was_wrong(body, header_length, words):
    with pytest.raises(BadRequest, match=words.replace("(", r"\(").replace("[", r"\[")):
        decode_infer_request(body, header_length, model_name="m")


def test_binary_sizes_must_add_up():
    header = _json([{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}])
    data = np.ones(2, np.float32).tobytes()
    assert decode_infer_request(header + data, len(header), model_name="m").inputs[0].data.tolist() == [1.0, 1.0]
    with pytest.raises(BadRequest, match="add up to 8"):
        decode_infer_request(header + data + b"xx", len(header), model_name="m")
    short = _json([{"name": "x", "shape": [3], "datatype": "FP32", "parameters": {"binary_data_size": 8}}])
    with pytest.raises(BadRequest, match="disagree with shape"):
        decode_infer_request(short + data, len(short), model_name="m")
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        parse_header_length(str(len(header) + 100), len(header))


def test_unsupported_extensions_answer_501():
    shm = _json([{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"shared_memory_region": "r"}}])
    with pytest.raises(NotImplemented_):
        decode_infer_request(shm, None, model_name="m")
    cls = _json([{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
                outputs=[{"name": "y", "parameters": {"classification": 3}}])
    with pytest.raises(NotImplemented_):
        decode_infer_request(cls, None, model_name="m")


def test_decompression_and_its_limit():
    body = b'{"inputs": []}' * 100
    assert decompress(gzip.compress(body), "gzip", 1 << 20) == body
    assert decompress(zlib.compress(body), "deflate", 1 << 20) == body
    raw = zlib.compressobj(wbits=-15)
    assert decompress(raw.compress(body) + raw.flush(), "deflate", 1 << 20) == body
    with pytest.raises(PayloadTooLarge):
        decompress(gzip.compress(b"\0" * (1 << 20)), "gzip", 1000)
    with pytest.raises(BadRequest):
        decompress(b"garbage", "gzip", 1000)
    with pytest.raises(NotImplemented_):
        decompress(body, "br", 1000)
    assert compress(body, "br, gzip;q=0") == (body, None)


def test_status_mapping():
    cases = [
        (BadRequest("x"), 400, "INVALID_ARGUMENT"),
        (ec.InvalidInputError("x"), 400, "INVALID_ARGUMENT"),
        (ec.QueueFullError("x"), 503, "UNAVAILABLE"),
        (ec.EngineClosedError("x"), 503, "UNAVAILABLE"),
        (ec.RequestTimeoutError("x"), 504, "DEADLINE_EXCEEDED"),
        (ec.BackendExecutionError("x"), 500, "INTERNAL"),
        (ec.UnsupportedOperatorError("x"), 501, "UNIMPLEMENTED"),
        (RuntimeError("x"), 500, "INTERNAL"),
    ]
    for exc, http_status, grpc_code in cases:
        assert status_of(exc)[:2] == (http_status, grpc_code), exc


def test_statistics_from_engine_stats():
    stats = EngineStats(total_inferences=10, total_executions=4, average_queue_ms=1.0, average_compute_ms=2.0,
                        batch_size_histogram={1: 1, 3: 3})
    doc = model_statistics(name="m", version="1", stats=stats, success=(10, 5000), fail=(2, 100),
                           last_inference_ms=123)
    assert doc["inference_count"] == 10 and doc["execution_count"] == 4
    infer = doc["inference_stats"]
    assert infer["success"] == {"count": 10, "ns": 5000} and infer["fail"] == {"count": 2, "ns": 100}
    assert infer["queue"] == {"count": 10, "ns": 10_000_000}
    assert infer["compute_infer"] == {"count": 10, "ns": 20_000_000}
    assert [(b["batch_size"], b["compute_infer"]["count"]) for b in doc["batch_stats"]] == [(1, 1), (3, 3)]
    assert Limits().max_body_bytes == 64 << 20
