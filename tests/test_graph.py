"""Graph.load: every source kind, validation, specs, fingerprints, and refusal of bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgecore import ConfigurationError, DataType, Engine, EngineConfig, Graph, ModelLoadError
from edgecore.graph import LoadLimits
from edgecore.selection import load_graph


def test_load_from_path_bytes_and_proto_agree(tmp_path, conv_model):
    path = tmp_path / "conv.onnx"
    onnx.save(conv_model, path)
    graphs = [Graph.load(path), Graph.load(str(path)), Graph.load(path.read_bytes()), Graph.load(conv_model)]
    assert len({g.fingerprint for g in graphs}) == 1
    spec = graphs[0].inputs[0]
    assert (spec.name, spec.dtype, spec.shape) == ("x", DataType.FLOAT, ("batch", 3, 10, 10))
    assert graphs[0].outputs[0].shape == ("batch", 8, 10, 10)
    assert Graph.load(graphs[0]) is graphs[0]


def test_fingerprint_changes_with_weights(conv_model):
    other = onnx.ModelProto()
    other.CopyFrom(conv_model)
    weights = numpy_helper.to_array(other.graph.initializer[0]).copy()
    weights[0, 0, 0, 0] += 1
    other.graph.initializer[0].CopyFrom(numpy_helper.from_array(weights, other.graph.initializer[0].name))
    assert Graph.load(other).fingerprint != Graph.load(conv_model).fingerprint


def test_zoo_source():
    graph = load_graph("zoo:resnet_tiny")
    assert graph.inputs[0].shape[0] == "batch"


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", ["empty"]),
        (b"this is plainly not a protobuf \xff\xfe", ["not an ONNX model"]),
        (b"\x08\x07", ["no graph"]),
    ],
    ids=["empty", "garbage", "no-graph"],
)
def test_bad_files_are_refused(tmp_path, content, words):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError) as info:
        Graph.load(path)
    for word in words:
        assert word in str(info.value)


def test_truncated_file_is_refused(tmp_path, conv_model):
    data = conv_model.SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="not an ONNX model|validation|no graph"):
        Graph.load(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        Graph.load(tmp_path / "nope.onnx")
    with pytest.raises(ModelLoadError, match="not a file"):
        Graph.load(tmp_path)


def test_invalid_graph_fails_validation():
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelLoadError, match="validation"):
        Graph.load(model)


def test_unknown_source_type():
    with pytest.raises(ModelLoadError, match="cannot load a model from int"):
        Graph.load(42)


# -- external data: resolved only inside the model's own folder --------------------------------------


def _external_model(location: str, offset: str = "0", length: str = "64") -> onnx.ModelProto:
    weights = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        entry = weights.external_data.add()
        entry.key, entry.value = key, value
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph(
        [node], "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weights],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_inside_folder_loads(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(np.ones((4, 4), np.float32).tobytes())
    graph = Graph.load(_save(_external_model("w.bin"), tmp_path / "m" / "model.onnx"))
    assert graph.num_parameters == 16


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink"])
def test_external_data_escaping_the_folder_is_refused(tmp_path, kind):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 64)
    folder = tmp_path / "m"
    folder.mkdir()
    if kind == "absolute":
        location = str(secret)
    elif kind == "dotdot":
        location = "../secret.bin"
    else:
        os.symlink(secret, folder / "link.bin")
        location = "link.bin"
    path = _save(_external_model(location), folder / "model.onnx")
    with pytest.raises(ModelLoadError, match="outside|escapes|relative path inside"):
        Graph.load(path)


def test_external_data_without_a_path_is_refused():
    with pytest.raises(ModelLoadError, match="not loaded from a file"):
        Graph.load(_external_model("w.bin").SerializeToString())


def test_external_data_missing_file(tmp_path):
    path = _save(_external_model("w.bin"), tmp_path / "m" / "model.onnx")
    with pytest.raises(ModelLoadError, match="no such file"):
        Graph.load(path)


@pytest.mark.parametrize(
    "location, offset, length, words",
    [
        ("w\0.bin", "0", "64", ["NUL"]),
        ("w.bin", "-8", "64", ["offset", "non-negative"]),
        ("w.bin", "eight", "64", ["offset", "'eight'"]),
        ("w.bin", "0", "-64", ["length", "non-negative"]),
        ("w.bin", "0", "1x", ["length"]),
        ("w.bin", "0", str(10**12), ["runs past the end"]),
        ("w.bin", "60", "64", ["runs past the end"]),
        ("w.bin", "0", "32", ["too small"]),
        ("w.bin", "0", "9" * 40, ["length"]),
    ],
    ids=["nul", "negative-offset", "word-offset", "negative-length", "bad-length", "length-1e12", "past-end",
         "short", "huge-number"],
)
def test_malformed_external_data_names_the_tensor(tmp_path, location, offset, length, words):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(np.ones((4, 4), np.float32).tobytes())
    path = _save(_external_model(location, offset, length), tmp_path / "m" / "model.onnx")
    with pytest.raises(ModelLoadError) as info:
        Graph.load(path)
    for word in ["tensor 'w'", *words]:
        assert word in str(info.value), f"{word!r} not in {info.value}"


def test_external_data_over_the_limit_is_refused_before_reading(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(np.ones((4, 4), np.float32).tobytes())
    path = _save(_external_model("w.bin"), tmp_path / "m" / "model.onnx")
    with pytest.raises(ModelLoadError, match="64 bytes, over the limit of 63.*max_external_data_bytes"):
        Graph.load(path, limits=LoadLimits(max_external_data_bytes=63))
    assert Graph.load(path, limits=LoadLimits(max_external_data_bytes=64)).num_parameters == 16


# -- as strict as the runtime: shapes, outputs ------------------------------------------------------


def _relu(x_shape, y_shape) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _ort(model: onnx.ModelProto, feeds):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def test_values_without_a_shape_take_any_rank(rng):
    model = _relu(None, None)  # no shape field at all: onnx.checker refuses it, onnxruntime runs it
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model, full_check=True)
    graph = Graph.load(model)
    assert graph.inputs[0].shape is None and graph.inputs[0].rank is None and not graph.inputs[0].is_static
    assert graph.outputs[0].shape is None
    assert "any rank" in graph.inputs[0].describe()
    pytest.importorskip("edgecore_cpu_simd")
    with Engine(EngineConfig(backend="cpu_simd")).load(graph) as engine:
        for shape in [(3,), (2, 5), (2, 3, 4, 5)]:
            x = rng.standard_normal(shape).astype(np.float32)
            np.testing.assert_array_equal(engine.run({"x": x})["y"], _ort(model, {"x": x})["y"])


def test_shapeless_values_are_still_validated():
    model = _relu(None, None)
    model.graph.node[0].input[0] = "nowhere"
    with pytest.raises(ModelLoadError, match="validation"):
        Graph.load(model)


def test_minus_one_dims_are_any_size(rng):
    model = _relu([-1, 3], [-1, 3])  # as paddle2onnx and older exporters write an unknown size
    graph = Graph.load(model)
    assert graph.inputs[0].shape == (None, 3) and graph.outputs[0].shape == (None, 3)
    pytest.importorskip("edgecore_cpu_simd")
    with Engine(EngineConfig(backend="cpu_simd")).load(graph) as engine:
        for batch in (1, 7):
            x = rng.standard_normal((batch, 3)).astype(np.float32)
            np.testing.assert_array_equal(engine.run({"x": x})["y"], _ort(model, {"x": x})["y"])


def test_a_graph_without_outputs_is_refused_at_load():
    model = _relu([2], [2])
    del model.graph.output[:]
    with pytest.raises(ModelLoadError, match="no outputs"):
        Graph.load(model)
    with pytest.raises(ModelLoadError, match="no outputs"):
        Graph.load(model, check=False)


def test_non_tensor_input_is_named():
    graph = helper.make_graph(
        [helper.make_node("SequenceLength", ["s"], ["n"])], "seq",
        [helper.make_value_info("s", helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, None)))],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelLoadError, match="input .s. is a sequence, not a tensor"):
        Graph.load(model)


# -- limits: refused before anything is allocated ---------------------------------------------------


def _claiming(dims) -> onnx.ModelProto:
    model = _relu([2], [2])
    model.graph.initializer.append(TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=dims, raw_data=b"\0" * 8))
    return model


@pytest.mark.parametrize("check", [True, False])
def test_tensor_claiming_1e12_elements_is_refused(check):
    with pytest.raises(ModelLoadError, match="tensor 'huge'.*1,000,000,000,000 elements.*max_tensor_elements"):
        Graph.load(_claiming([10**6, 10**6]), check=check)


def test_tensor_with_negative_dims_is_refused():
    with pytest.raises(ModelLoadError, match="tensor 'huge'.*negative dims"):
        Graph.load(_claiming([-1, 2]), check=False)


def test_model_size_limit_for_every_source(tmp_path, conv_model):
    data = conv_model.SerializeToString()
    path = tmp_path / "conv.onnx"
    path.write_bytes(data)
    small = LoadLimits(max_model_bytes=len(data) - 1)
    for source in (path, data, conv_model):
        with pytest.raises(ModelLoadError, match="over the limit.*max_model_bytes.*EDGECORE_MAX_MODEL_BYTES"):
            Graph.load(source, limits=small)
        Graph.load(source, limits=LoadLimits(max_model_bytes=len(data)))


def test_limits_from_the_environment(monkeypatch, conv_model):
    monkeypatch.setenv("EDGECORE_MAX_TENSOR_ELEMENTS", "100")
    assert LoadLimits.from_env().max_tensor_elements == 100
    with pytest.raises(ModelLoadError, match="tensor 'w'.*over the limit of 100"):
        Graph.load(conv_model)
    monkeypatch.setenv("EDGECORE_MAX_TENSOR_ELEMENTS", "lots")
    with pytest.raises(ConfigurationError, match="EDGECORE_MAX_TENSOR_ELEMENTS.*'lots'"):
        Graph.load(conv_model)
    with pytest.raises(ConfigurationError, match="max_model_bytes"):
        LoadLimits(max_model_bytes=0)


def test_unreadable_path_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError):
        Graph.load(str(tmp_path / "a\0b.onnx"))


def test_function_body_inference_bug_is_not_a_load_error():
    """onnx's strict inference rejects the function body it expands MeanVarianceNormalization-13
    into; ONNX Runtime runs the operator's kernel, so Graph.load accepts the model."""
    graph = helper.make_graph(
        [helper.make_node("MeanVarianceNormalization", ["x"], ["y"])], "mvn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3, 3, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 3, 3, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    with pytest.raises(Exception, match="function body|Constant"):
        onnx.checker.check_model(model, full_check=True)
    assert Graph.load(model).outputs[0].shape == (3, 3, 3, 1)
    _ort(model, {"x": np.ones((3, 3, 3, 1), np.float32)})  # the runtime runs it


def test_broken_subgraph_is_still_refused():
    then = helper.make_graph([helper.make_node("Add", ["x", "x"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 9])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], "if",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    with pytest.raises(ModelLoadError, match="validation"):
        Graph.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_huge_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.onnx"
    with open(path, "wb") as file:
        file.truncate(3 << 30)  # a sparse 3 GiB file: nothing allocated unless it is read
    with pytest.raises(ModelLoadError, match="3,221,225,472 bytes, over the limit of 2,147,483,648"):
        Graph.load(path)


def test_ir3_initializers_need_not_be_listed_as_inputs(rng):
    """The checker wants an IR 3 model's initializers listed as graph inputs; ONNX Runtime runs it
    without (its own datasets/mul_1.onnx is such a model)."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"])], "mul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])],
        [numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)])
    model.ir_version = 3
    with pytest.raises(onnx.checker.ValidationError, match="initializer but not in graph input"):
        onnx.checker.check_model(model)
    graph = Graph.load(model)
    assert [s.name for s in graph.inputs] == ["x"]
    x = rng.standard_normal((3, 2)).astype(np.float32)
    np.testing.assert_array_equal(_ort(model, {"x": x})["y"], x * numpy_helper.to_array(model.graph.initializer[0]))


@pytest.mark.parametrize("dims", [([-1, 3], [-7, 3]), ([2, 3], [2, -1]), ([-(2**62), 3], [-1, 3])])
def test_any_negative_size_is_any_size(rng, dims):
    """ONNX Runtime reads every negative size as unknown, also where onnx's inference would find a
    fixed one (an output written -1 whose size the input fixes)."""
    model = _relu(*dims)
    graph = Graph.load(model)
    for spec, declared in zip((graph.inputs[0], graph.outputs[0]), dims):
        assert spec.shape == tuple(None if d < 0 else d for d in declared)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    _ort(model, {"x": x})  # the runtime loads and runs it
    pytest.importorskip("edgecore_cpu_simd")
    with Engine(EngineConfig(backend="cpu_simd")).load(graph) as engine:
        np.testing.assert_array_equal(engine.run({"x": x})["y"], np.maximum(x, 0))
