"""``edgecore serve tuned/``: a folder ``edgecore tune`` wrote (its chosen model and ``edgecore.toml``)
is served under the folder's name with the configuration tune chose, beside models served with the
server's own flags."""

from __future__ import annotations

import shutil

import numpy as np
import tritonclient.http as httpclient

from edgecore import Engine


def test_a_tuned_folder_is_served_with_its_configuration(models, start_server, tmp_path):
    tuned = tmp_path / "addsub_tuned"
    tuned.mkdir()
    shutil.copy(models["addsub"], tuned / "model.onnx")
    # what tune writes: the model and the EngineConfig fields it chose (here a backend the server's
    # own flags do not name, so that the test sees which configuration was used)
    (tuned / "edgecore.toml").write_text('model = "model.onnx"\n\n[engine]\nbackend = "reference"\nnum_threads = 1\n')
    server = start_server([str(tuned), f"plain={models['addsub']}", "--backend", "cpu_simd"])
    client = httpclient.InferenceServerClient(url=server.http_url)

    assert client.get_model_config("addsub_tuned")["backend"] == "reference"
    assert client.get_model_config("plain")["backend"] == "cpu_simd"
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((2, 4), 0.5, np.float32)
    inputs = [httpclient.InferInput("a", [2, 4], "FP32"), httpclient.InferInput("b", [2, 4], "FP32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("addsub_tuned", inputs)
    with Engine.from_tuned(tuned) as engine:
        assert engine.backend == "reference"
        expected = engine.run({"a": a, "b": b})
    np.testing.assert_array_equal(result.as_numpy("sum"), expected["sum"])
    np.testing.assert_array_equal(result.as_numpy("diff"), expected["diff"])
    assert server.stop() == 0, server.log()
