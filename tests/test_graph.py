"""Graph.load: every source kind, validation, specs, fingerprints, and refusal of bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgecore.selection import load_graph
from edgecore import DataType, Graph, ModelLoadError


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


def _external_model(location: str) -> onnx.ModelProto:
    weights = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
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
