"""BYTES tensors over HTTP (JSON and binary) and gRPC, and the bearer token: every endpoint but
health needs it. The server runs on the reference backend (onnx.reference), which takes string
tensors; outputs are compared with ``Engine.run`` on the same backend."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from edgecore import Engine, EngineConfig
from tritonclient.utils import InferenceServerException

AUTH = {"Authorization": "Bearer s3cret"}
TEXT = np.array([[b"hello", "w\u00f6rld".encode()], [b"", b"edge core"]], dtype=object)


@pytest.fixture(scope="module")
def engine(models):
    with Engine(EngineConfig(backend="reference")) as engine:
        engine.load(str(models["strid"]))
        yield engine


def _expected(engine) -> np.ndarray:
    out = engine.run({"s": np.vectorize(lambda b: b.decode(), otypes=[object])(TEXT)})["out"]
    return np.vectorize(lambda s: s.encode(), otypes=[object])(out)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_bytes_over_http(reference_server, engine, binary):
    client = httpclient.InferenceServerClient(url=reference_server.http_url)
    try:
        tensor = httpclient.InferInput("s", [2, 2], "BYTES")
        tensor.set_data_from_numpy(TEXT, binary_data=binary)
        out = httpclient.InferRequestedOutput("out", binary_data=binary)
        result = client.infer("strid", [tensor], outputs=[out], headers=AUTH)
        got = result.as_numpy("out")
        got = np.vectorize(lambda v: v if isinstance(v, bytes) else v.encode(), otypes=[object])(got)
        np.testing.assert_array_equal(got, _expected(engine))
    finally:
        client.close()


def test_bytes_over_grpc(reference_server, engine):
    client = grpcclient.InferenceServerClient(url=reference_server.grpc_url)
    try:
        tensor = grpcclient.InferInput("s", [2, 2], "BYTES")
        tensor.set_data_from_numpy(TEXT)
        result = client.infer("strid", [tensor], headers={"authorization": "Bearer s3cret"})
        np.testing.assert_array_equal(result.as_numpy("out"), _expected(engine))
    finally:
        client.close()


def test_token_required_but_for_health(reference_server):
    base = f"http://{reference_server.http_url}"
    for path in ("/v2/health/live", "/v2/health/ready"):
        with urllib.request.urlopen(base + path, timeout=30) as response:
            assert response.status == 200
    for path in ("/v2", "/v2/models/strid", "/v2/models/strid/ready", "/v2/models/stats", "/metrics"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(base + path, timeout=30)
        assert info.value.code == 401 and b'"error"' in info.value.read()
        wrong = urllib.request.Request(base + path, headers={"Authorization": "Bearer nope"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(wrong, timeout=30)
        assert info.value.code == 401
        with urllib.request.urlopen(urllib.request.Request(base + path, headers=AUTH), timeout=30) as response:
            assert response.status == 200

    client = httpclient.InferenceServerClient(url=reference_server.http_url)
    try:
        assert client.is_server_ready()
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata("strid")
        assert info.value.status() == "401"
    finally:
        client.close()

    client = grpcclient.InferenceServerClient(url=reference_server.grpc_url)
    try:
        assert client.is_server_live()
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata("strid")
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        assert client.get_model_metadata("strid", headers={"authorization": "Bearer s3cret"}).name == "strid"
    finally:
        client.close()
