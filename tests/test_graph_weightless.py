"""Graph.load keeps weights out of memory: external data stays on disk, large inline weights are
converted once into the artifact cache, checks run on the weightless model, and what runtimes take
is a path. Numbers are checked against onnx.reference on the original model."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgecore import Graph, ModelLoadError
from edgecore.cache import ArtifactCache
from edgecore.modelfile import INLINE_MAX, content_digest


def _model(rows: int = 600) -> onnx.ModelProto:
    """x[1, rows] @ W[rows, 512] + b, reshaped to [2, 256] through an inline shape constant."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((rows, 512)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(512).astype(np.float32), "b")
    shape = numpy_helper.from_array(np.array([2, -1], np.int64), "shape")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["a"]),
        helper.make_node("Reshape", ["a", "shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w, b, shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _expected(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


def _run(graph: Graph, x: np.ndarray) -> np.ndarray:
    return ReferenceEvaluator(graph.to_proto()).run(None, {"x": x})[0]


def _external(tensor) -> bool:
    return isinstance(tensor, ir.ExternalTensor)


def test_external_data_stays_on_disk(tmp_path):
    model = _model()
    path = tmp_path / "m" / "model.onnx"
    path.parent.mkdir()
    onnx.save_model(onnx.ModelProto.FromString(model.SerializeToString()), path, save_as_external_data=True,
                    location="weights.bin", size_threshold=1024)
    graph = Graph.load(path, cache_dir=tmp_path / "cache")
    weights = graph.model.graph.initializers
    assert _external(weights["W"].const_value) and _external(weights["b"].const_value)
    assert not _external(weights["shape"].const_value)  # under 1 KiB: inline
    assert graph.runtime_model() == str(path)
    assert graph.outputs[0].shape == (2, 256)  # inferred through the inline Reshape target
    assert content_digest(model) == content_digest(onnx.load(path, load_external_data=False), path.parent)
    assert graph.fingerprint == Graph.load(model, cache_dir=tmp_path / "c2").fingerprint
    x = np.ones((1, 600), np.float32)
    np.testing.assert_allclose(_run(graph, x), _expected(model, x), rtol=1e-5)
    assert not (tmp_path / "cache" / "artifacts").exists()  # nothing converted


def test_large_inline_file_is_converted_once(tmp_path):
    model = _model()
    assert model.ByteSize() >= INLINE_MAX
    path = tmp_path / "inline.onnx"
    onnx.save_model(model, path)
    cache_dir = tmp_path / "cache"
    first = Graph.load(path, cache_dir=cache_dir)
    second = Graph.load(path, cache_dir=cache_dir)
    cache = ArtifactCache(cache_dir / "artifacts")
    assert len(cache.entries()) == 1
    assert first.path == second.path and first.path.is_relative_to(cache_dir)
    assert (first.path.parent / "model.data").stat().st_size >= 600 * 512 * 4
    assert first.path.stat().st_size < 64 << 10  # the model file holds no weights
    assert _external(first.model.graph.initializers["W"].const_value)
    assert first.source == str(path)
    assert first.fingerprint == second.fingerprint == Graph.load(model.SerializeToString(), cache_dir=tmp_path).fingerprint
    x = np.random.default_rng(1).standard_normal((1, 600)).astype(np.float32)
    np.testing.assert_allclose(_run(second, x), _expected(model, x), rtol=1e-5)


def test_large_proto_and_bytes_are_converted_and_the_callers_proto_is_kept(tmp_path):
    model = _model()
    before = model.SerializeToString()
    from_proto = Graph.load(model, cache_dir=tmp_path)
    assert model.SerializeToString() == before  # the caller's proto has its weights back
    from_bytes = Graph.load(before, cache_dir=tmp_path)
    for graph in (from_proto, from_bytes):
        assert graph.path is not None and graph.runtime_model() == str(graph.path)
        assert _external(graph.model.graph.initializers["W"].const_value)
    assert from_proto.fingerprint == from_bytes.fingerprint


def test_damaged_conversion_is_rebuilt(tmp_path):
    path = tmp_path / "inline.onnx"
    onnx.save_model(_model(), path)
    graph = Graph.load(path, cache_dir=tmp_path / "cache")
    data = graph.path.parent / "model.data"
    blob = bytearray(data.read_bytes())
    blob[100] ^= 0xFF
    data.write_bytes(bytes(blob))
    again = Graph.load(path, cache_dir=tmp_path / "cache")  # a fresh process would verify checksums
    x = np.ones((1, 600), np.float32)
    np.testing.assert_allclose(_run(again, x), _expected(_model(), x), rtol=1e-5)


def test_in_memory_graph_moves_its_weights_to_the_cache_for_runtimes(tmp_path):
    model = _model()
    graph = Graph(ir.from_proto(model), source="optimized")
    assert graph.path is None
    target = graph.runtime_model(tmp_path)
    assert isinstance(target, str) and target.startswith(str(tmp_path))
    assert _external(graph.model.graph.initializers["W"].const_value)
    assert graph.runtime_model(tmp_path) == target
    x = np.ones((1, 600), np.float32)
    np.testing.assert_allclose(_run(graph, x), _expected(model, x), rtol=1e-5)


def test_small_in_memory_model_is_given_as_bytes(tmp_path):
    graph = Graph.load(_model(rows=4).SerializeToString(), cache_dir=tmp_path)
    assert graph.path is None
    assert isinstance(graph.runtime_model(tmp_path), bytes)
    assert not (tmp_path / "artifacts").exists()


def test_checks_still_run_on_the_weightless_model(tmp_path):
    model = _model()
    model.graph.node[0].input[1] = "missing"
    path = tmp_path / "bad.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="w.bin", size_threshold=1024)
    with pytest.raises(ModelLoadError, match="failed ONNX validation"):
        Graph.load(path, cache_dir=tmp_path / "cache")
