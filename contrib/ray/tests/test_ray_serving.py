"""Two replicas, each with its own Engine, serve concurrent traffic through a DeploymentHandle and
over KServe v2 HTTP on Ray Serve's ingress (driven by tritonclient.http); every answer equals
``Engine.run`` on the same input. One Ray cluster for the module."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import edgecore_ray
from edgecore.errors import InvalidInputError

APP = "serving"
NAME = "digits_cnn"


@pytest.fixture(scope="module")
def handle(deploy):
    return deploy(APP, num_replicas=2, router="power_of_two")


def test_two_replicas_serve_concurrent_traffic_like_engine_run(handle, reference, cluster):
    before = {r["replica"]: r["requests"] for r in edgecore_ray.replica_stats(handle, replicas=2)}

    def one(seed: int) -> tuple[np.ndarray, np.ndarray]:
        x = cluster.inputs(seed, batch=1 + seed % 3)
        return x, handle.infer.remote({"input": x}).result(timeout_s=60)["logits"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(96)))
    for x, logits in answers:
        # equal up to float rounding: a replica may run the request inside a larger dynamic batch
        np.testing.assert_allclose(logits, reference(x), rtol=1e-5, atol=1e-6)
    after = edgecore_ray.replica_stats(handle, replicas=2)
    served = {r["replica"]: r["requests"] - before.get(r["replica"], 0) for r in after}
    assert len(served) == 2 and sum(served.values()) == 96, served
    assert all(n > 0 for n in served.values()), f"one replica served nothing: {served}"
    assert all(r["failures"] == 0 and r["backend"] == "cpu_simd" for r in after), after


def test_tritonclient_http_health_metadata_and_infer(handle, ray_serve, reference, cluster):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{ray_serve}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(NAME)
    assert client.get_server_metadata()["name"] == "edgecore"
    meta = client.get_model_metadata(NAME)
    assert meta["name"] == NAME and meta["platform"] == "edgecore_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.get_model_config(NAME)["max_batch_size"] >= 1

    x = cluster.inputs(7, batch=3)
    for binary in (False, True):
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        wanted = [httpclient.InferRequestedOutput("logits", binary_data=binary)]
        result = client.infer(NAME, [tensor], outputs=wanted, request_compression_algorithm="gzip",
                              response_compression_algorithm="gzip")
        np.testing.assert_array_equal(result.as_numpy("logits"), reference(x))

    bad = httpclient.InferInput("input", [1, 2, 8, 8], "FP32")  # wrong channel count
    bad.set_data_from_numpy(np.zeros((1, 2, 8, 8), np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer(NAME, [bad])
    assert caught.value.status() == "400"
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("no_such_model")
    assert caught.value.status() == "404" and NAME in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:  # per replica, so not offered on Ray
        client.unload_model(NAME)
    assert caught.value.status() == "404"


def test_client_returns_engine_outputs_and_never_retries_bad_input(handle, ray_serve, reference, cluster):
    x = cluster.inputs(3, batch=2)
    for target, kwargs in ((handle, {}), (f"http://127.0.0.1:{ray_serve}", {"model": NAME})):
        client = edgecore_ray.Client(target, retries=3, backoff_s=0.01, **kwargs)
        np.testing.assert_array_equal(client.infer({"input": x})["logits"], reference(x))
        attempts = client.attempts
        with pytest.raises(InvalidInputError, match="input"):
            client.infer({"input": np.zeros((1, 3, 8, 8), np.float32)})
        assert client.attempts == attempts + 1, "a 4xx / InvalidInputError was retried"


def test_a_model_given_as_modelproto_is_served_under_its_name(deploy, reference, cluster):
    from edgecore import zoo

    proto = deploy("proto", model=zoo.build("digits_cnn"), name="digits_proto", num_replicas=1)
    x = cluster.inputs(5, batch=2)
    np.testing.assert_allclose(proto.infer.remote({"input": x}).result(timeout_s=60)["logits"], reference(x),
                               rtol=1e-5, atol=1e-6)
    assert proto.metadata.remote().result(timeout_s=30)["name"] == "digits_proto"


def test_a_tuned_folder_is_served_with_its_configuration(deploy, reference, cluster, tmp_path):
    """A folder ``edgecore tune`` wrote (model + edgecore.toml): every replica runs tune's choice."""
    import onnx

    from edgecore import zoo

    tuned = tmp_path / "digits_tuned"
    tuned.mkdir()
    onnx.save(zoo.build("digits_cnn"), tuned / "model.onnx")
    (tuned / "edgecore.toml").write_text('model = "model.onnx"\n\n[engine]\nbackend = "reference"\nnum_threads = 1\n')
    handle = deploy("tuned", model=str(tuned), name="digits_tuned", num_replicas=1)
    x = cluster.inputs(6, batch=2)
    np.testing.assert_allclose(handle.infer.remote({"input": x}).result(timeout_s=60)["logits"], reference(x),
                               rtol=1e-4, atol=1e-5)
    assert handle.replica_stats.remote().result(timeout_s=30)["backend"] == "reference"
