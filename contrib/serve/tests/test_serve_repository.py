"""The model repository extension: a ``--model-repository`` folder loaded lazily, versions, index,
explicit load/unload; and many models under one memory budget, served in turn (loads and evictions
counted, every request answered)."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


@pytest.fixture
def repository(models, tmp_path):
    folder = tmp_path / "repo"
    folder.mkdir()
    shutil.copy(models["addsub"], folder / "addsub.onnx")
    for version in ("1", "2"):
        (folder / "twice" / version).mkdir(parents=True)
        shutil.copy(models["mul2"], folder / "twice" / version / "model.onnx")
    return folder


def _addsub_inputs(module, value: float):
    a = np.full((1, 4), value, dtype=np.float32)
    inputs = []
    for name in ("a", "b"):
        tensor = module.InferInput(name, [1, 4], "FP32")
        tensor.set_data_from_numpy(a)
        inputs.append(tensor)
    return inputs


def _twice_inputs(module):
    tensor = module.InferInput("x", [1, 3], "INT64")
    tensor.set_data_from_numpy(np.array([[1, 2, 3]], dtype=np.int64))
    return [tensor]


def test_repository_lazy_load_versions_index_and_unload(repository, start_server):
    server = start_server(["--model-repository", str(repository)])
    client = httpclient.InferenceServerClient(url=server.http_url)
    try:
        index = {(m["name"], m["version"]): m["state"] for m in client.get_model_repository_index()}
        assert index == {("addsub", "1"): "UNAVAILABLE", ("twice", "1"): "UNAVAILABLE", ("twice", "2"): "UNAVAILABLE"}
        assert not client.is_model_ready("addsub")

        result = client.infer("addsub", _addsub_inputs(httpclient, 2.0))  # loaded on first request
        np.testing.assert_array_equal(result.as_numpy("sum"), np.full((1, 4), 4.0, np.float32))
        assert client.is_model_ready("addsub")
        assert client.infer("twice", _twice_inputs(httpclient)).get_response()["model_version"] == "2"
        assert client.infer("twice", _twice_inputs(httpclient), model_version="1").get_response()["model_version"] == "1"
        assert client.get_model_metadata("twice")["versions"] == ["1", "2"]

        client.unload_model("addsub")
        assert not client.is_model_ready("addsub")
        with pytest.raises(InferenceServerException) as info:
            client.infer("addsub", _addsub_inputs(httpclient, 1.0))
        assert info.value.status() == "503" and "load" in info.value.message()
        body = json.dumps({"inputs": [{"name": n, "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}
                                      for n in ("a", "b")]}).encode()
        request = urllib.request.Request(f"http://{server.http_url}/v2/models/addsub/infer", data=body)
        with pytest.raises(urllib.error.HTTPError) as raw:
            urllib.request.urlopen(request, timeout=30)
        assert raw.value.code == 503 and raw.value.headers["Retry-After"] == "1"
        client.load_model("addsub")
        assert client.is_model_ready("addsub")
        client.infer("addsub", _addsub_inputs(httpclient, 1.0))
        ready = client.get_model_repository_index()
        assert {(m["name"], m["version"]) for m in ready if m["state"] == "READY"} >= {("addsub", "1"), ("twice", "2")}
        with pytest.raises(InferenceServerException) as info:
            client.load_model("no_such_model")
        assert info.value.status() == "404"
    finally:
        client.close()

    grpc = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        names = {(m.name, m.version) for m in grpc.get_model_repository_index().models}
        assert ("twice", "1") in names
        grpc.unload_model("twice")
        assert not grpc.is_model_ready("twice")
        grpc.load_model("twice")
        assert grpc.is_model_ready("twice", "1")
    finally:
        grpc.close()
    assert server.stop() == 0


def test_memory_budget_serves_models_in_turn(repository, start_server):
    # a budget no two of these models fit in (each holds at least its file: addsub 165 bytes, twice
    # 98), though each fits alone: every switch of model evicts the one before
    sizes = sorted(p.stat().st_size for p in repository.rglob("*.onnx"))
    assert sizes[-1] < 170 < sizes[0] + sizes[1]
    server = start_server(["--model-repository", str(repository), "--memory-budget", "170"])
    failures: list[str] = []

    def load(turns: int, module, url: str) -> None:
        client = module.InferenceServerClient(url=url)
        try:
            for turn in range(turns):
                try:
                    if turn % 2:
                        result = client.infer("addsub", _addsub_inputs(module, float(turn)))
                        assert float(result.as_numpy("sum")[0, 0]) == 2.0 * turn
                    else:
                        version = "1" if turn % 4 else "2"
                        result = client.infer("twice", _twice_inputs(module), model_version=version)
                        assert result.as_numpy("y").tolist() == [[2, 4, 6]]
                except Exception as exc:  # noqa: BLE001 - every failure is reported
                    failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            client.close()

    threads = [threading.Thread(target=load, args=(8, httpclient, server.http_url)) for _ in range(2)]
    threads += [threading.Thread(target=load, args=(8, grpcclient, server.grpc_url)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    client = httpclient.InferenceServerClient(url=server.http_url)
    try:
        stats = {(s["name"], s["version"]): s for s in client.get_inference_statistics()["model_stats"]}
        assert sum(s["eviction_count"] for s in stats.values()) >= 2
        assert all(s["load_count"] >= 1 for s in stats.values())
        assert sum(s["inference_stats"]["success"]["count"] for s in stats.values()) == 32
        assert sum(m["state"] == "READY" for m in client.get_model_repository_index()) == 1
    finally:
        client.close()
    assert server.stop() == 0
