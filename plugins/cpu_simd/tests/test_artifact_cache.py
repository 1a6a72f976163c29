"""cpu_simd through edgecore's artifact cache: the ORT-optimized model with pre-packed weights is
written once and later starts load it at ORT_DISABLE_ALL; damaged entries are rebuilt; "min" memory
mode turns pre-packing and the arena off. Outputs are compared with raw onnxruntime on the original
model and the same inputs."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("edgecore_cpu_simd", reason="edgecore-cpu-simd is not installed")

from edgecore import Engine, EngineConfig  # noqa: E402
from edgecore.cache import MANIFEST, ArtifactCache  # noqa: E402


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """Gemm-like MLP with 1.25 MiB of weights (MatMul B is pre-packed by MLAS), inline."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((256, 1024)).astype(np.float32) * 0.05, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((1024, 64)).astype(np.float32) * 0.05, "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        [w1, w2],
    )
    path = tmp_path_factory.mktemp("model") / "mlp.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _expected(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _engine(path, cache_dir, **config):
    config = {"num_threads": 1, **config}
    return Engine(EngineConfig(backend="cpu_simd", cache_dir=cache_dir, **config)).load(path)


def _backend_entries(cache_dir):
    found = []
    for folder, _, _ in ArtifactCache(cache_dir / "artifacts", max_bytes=0).entries():
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest["key"]["backend"] == "cpu_simd":
            found.append((folder, manifest))
    return found


def test_second_start_loads_the_cached_optimized_model(model_path, tmp_path):
    x = np.random.default_rng(1).standard_normal((3, 256)).astype(np.float32)
    expected = _expected(model_path, x)
    with _engine(model_path, tmp_path) as first:
        np.testing.assert_allclose(first.run({"x": x})["y"], expected, rtol=1e-4, atol=1e-5)
    (folder, manifest), = _backend_entries(tmp_path)
    assert {"model.onnx", "model.data"} <= set(manifest["files"])
    assert manifest["key"]["runtime"] == f"onnxruntime {ort.__version__}"
    assert manifest["key"]["cpu_features"]  # the key names this CPU's SIMD features
    with _engine(model_path, tmp_path) as second:
        compiled = second.compiled
        assert compiled.model_source == str(folder / "model.onnx")
        level = compiled.session.get_session_options().graph_optimization_level
        assert level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        np.testing.assert_allclose(second.run({"x": x})["y"], expected, rtol=1e-4, atol=1e-5)
    assert len(_backend_entries(tmp_path)) == 1


def test_damaged_entry_is_rebuilt(model_path, tmp_path):
    x = np.ones((1, 256), np.float32)
    _engine(model_path, tmp_path).close()
    (folder, _), = _backend_entries(tmp_path)
    data = folder / "model.data"
    blob = bytearray(data.read_bytes())
    for offset in range(0, len(blob), 4096):
        blob[offset] ^= 0x5A
    data.write_bytes(bytes(blob))
    with _engine(model_path, tmp_path) as engine:
        np.testing.assert_allclose(engine.run({"x": x})["y"], _expected(model_path, x), rtol=1e-4, atol=1e-5)
    (folder, manifest), = _backend_entries(tmp_path)
    assert hashlib.sha256((folder / "model.data").read_bytes()).hexdigest() == manifest["files"]["model.data"][1]


def test_edited_manifest_key_is_not_trusted(model_path, tmp_path):
    _engine(model_path, tmp_path).close()
    (folder, manifest), = _backend_entries(tmp_path)
    manifest["key"]["runtime"] = "onnxruntime 0.0"
    (folder / MANIFEST).write_text(json.dumps(manifest))
    x = np.ones((2, 256), np.float32)
    with _engine(model_path, tmp_path) as engine:
        np.testing.assert_allclose(engine.run({"x": x})["y"], _expected(model_path, x), rtol=1e-4, atol=1e-5)
    (_, rebuilt), = _backend_entries(tmp_path)
    assert rebuilt["key"]["runtime"] == f"onnxruntime {ort.__version__}"


def test_settings_that_change_the_artifact_change_the_key(model_path, tmp_path):
    _engine(model_path, tmp_path).close()
    _engine(model_path, tmp_path, memory_mode="min").close()
    _engine(model_path, tmp_path, graph_optimization_level="basic").close()
    _engine(model_path, tmp_path, num_threads=2).close()  # threads do not change what is built
    assert len(_backend_entries(tmp_path)) == 3


def test_min_memory_mode_turns_prepacking_and_arena_off(model_path, tmp_path):
    x = np.ones((1, 256), np.float32)
    with _engine(model_path, tmp_path, memory_mode="min") as engine:
        so = engine.compiled.session.get_session_options()
        assert so.get_session_config_entry("session.disable_prepacking") == "1"
        assert not so.enable_cpu_mem_arena
        np.testing.assert_allclose(engine.run({"x": x})["y"], _expected(model_path, x), rtol=1e-4, atol=1e-5)
    (_, manifest), = _backend_entries(tmp_path)
    assert ["memory_mode", '"min"'] in manifest["key"]["options"]
    with _engine(model_path, tmp_path) as balanced:  # the default: pre-packed weights and the arena
        so = balanced.compiled.session.get_session_options()
        with pytest.raises(RuntimeError):  # not set
            so.get_session_config_entry("session.disable_prepacking")
        assert so.enable_cpu_mem_arena


def test_cache_can_be_turned_off_and_an_unwritable_one_is_skipped(model_path, tmp_path):
    x = np.ones((1, 256), np.float32)
    with _engine(model_path, tmp_path, custom_options={"artifact_cache": False}) as engine:
        assert engine.compiled.model_source != ""
        assert not _backend_entries(tmp_path)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with _engine(model_path, blocked) as engine:  # converting the inline model fails too: it loads as it is
        np.testing.assert_allclose(engine.run({"x": x})["y"], _expected(model_path, x), rtol=1e-4, atol=1e-5)


def test_a_writer_killed_mid_build_leaves_no_trusted_entry(model_path, tmp_path):
    """A process killed (SIGKILL) after ONNX Runtime wrote the optimized model into the staging
    folder, before the entry was renamed into place: the next start builds the entry afresh and runs
    like raw onnxruntime."""
    script = textwrap.dedent(
        f"""
        import time
        from edgecore import Engine, EngineConfig
        from edgecore_cpu_simd import artifacts
        real = artifacts._builder
        def stalled(model, so):
            build = real(model, so)
            def run(folder):
                build(folder)
                (folder / "model.data").write_bytes(b"half")  # as if killed mid-write
                print("writing", flush=True)
                time.sleep(60)
            return run
        artifacts._builder = stalled
        Engine(EngineConfig(backend="cpu_simd", num_threads=1, cache_dir={str(tmp_path)!r})).load({str(model_path)!r})
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert not _backend_entries(tmp_path)  # only a staging folder
    x = np.random.default_rng(2).standard_normal((2, 256)).astype(np.float32)
    with _engine(model_path, tmp_path) as engine:
        assert engine.compiled.model_source.startswith(str(tmp_path))
        np.testing.assert_allclose(engine.run({"x": x})["y"], _expected(model_path, x), rtol=1e-4, atol=1e-5)
    (folder, manifest), = _backend_entries(tmp_path)
    assert (folder / "model.data").stat().st_size == manifest["files"]["model.data"][0] > 4
