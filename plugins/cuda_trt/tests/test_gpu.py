"""The tensorrt backend on an NVIDIA GPU with TensorRT installed: outputs against onnxruntime, the
plan cache (hit, damaged plan rebuilt), the timing cache, unsupported operators, device outputs.

Marked ``gpu``; skipped where TensorRT, cuda-python or a CUDA device is missing (the lent GPU
machines have no TensorRT, so these ran nowhere yet).
"""

from __future__ import annotations

import numpy as np
import pytest

from edgecore_cuda_trt.backend import runtime_availability

_available = runtime_availability()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _available.ok, reason=f"tensorrt backend unavailable: {_available.reason}")]

from edgecore import Engine, EngineConfig  # noqa: E402
from edgecore.errors import UnsupportedOperatorError  # noqa: E402
from edgecore.selection import load_graph  # noqa: E402


@pytest.fixture
def config(tmp_path):
    def make(**custom):
        return EngineConfig(backend="tensorrt", device="gpu", custom_options={"cache_dir": str(tmp_path), **custom})

    return make


def _ort(graph, feeds):
    import onnxruntime

    session = onnxruntime.InferenceSession(graph.to_bytes(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def test_resnet_tiny_matches_onnxruntime_at_several_batch_sizes(config):
    graph = load_graph("zoo:resnet_tiny")
    with Engine(config(max_batch_size=8)).load(graph) as engine:
        for batch in (1, 4, 1, 8):  # the repeat replays a CUDA graph
            x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
            np.testing.assert_allclose(engine.run({"input": x})["logits"], _ort(graph, {"input": x})["logits"], rtol=5e-3, atol=5e-3)


def test_bert_needs_and_uses_sequence_ranges(config):
    graph = load_graph("zoo:bert_tiny")
    feeds = {
        "input_ids": np.random.default_rng(0).integers(0, 1000, (2, 16)).astype(np.int64),
        "attention_mask": np.ones((2, 16), np.int64),
        "token_type_ids": np.zeros((2, 16), np.int64),
    }
    with Engine(config(max_batch_size=4, dim_ranges={"sequence": [1, 16, 64]})).load(graph) as engine:
        got = engine.run(feeds)
    for name, want in _ort(graph, feeds).items():
        np.testing.assert_allclose(got[name], want, rtol=5e-3, atol=5e-3)


def test_second_compile_uses_the_cached_plan_and_a_damaged_plan_is_rebuilt(config, tmp_path):
    graph = load_graph("zoo:digits_cnn")
    x = np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32)
    with Engine(config()).load(graph) as engine:
        want = engine.run({"input": x})["logits"]
    [plan] = list((tmp_path / "plans").glob("*/engine.plan"))
    built_at = plan.stat().st_mtime_ns
    with Engine(config()).load(graph) as engine:
        np.testing.assert_array_equal(engine.run({"input": x})["logits"], want)
    assert plan.stat().st_mtime_ns == built_at  # reused, not rebuilt
    plan.write_bytes(b"\0" * plan.stat().st_size)  # same size, wrong content
    with Engine(config()).load(graph) as engine:
        np.testing.assert_allclose(engine.run({"input": x})["logits"], want, rtol=1e-5)
    assert list(tmp_path.glob("timing-sm*-trt*.cache"))


def test_unsupported_operators_are_named():
    from onnx import TensorProto, helper

    from edgecore.testing import make_model

    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    model = make_model(
        [node],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    from edgecore.graph import Graph

    with pytest.raises(UnsupportedOperatorError, match="Frobnicate"):
        Engine(EngineConfig(backend="tensorrt", device="gpu")).load(Graph.load(model, check=False))


def test_device_outputs_are_pooled_cuda_arrays(config):
    torch = pytest.importorskip("torch")
    graph = load_graph("zoo:digits_cnn")
    x = np.random.default_rng(2).standard_normal((3, 1, 8, 8)).astype(np.float32)
    with Engine(config(output_device="device")).load(graph) as engine:
        got = engine.run({"input": torch.from_numpy(x).cuda()})["logits"]
        as_torch = torch.as_tensor(got, device="cuda")  # __cuda_array_interface__: no copy
        assert as_torch.data_ptr() == got.ptr
        np.testing.assert_allclose(as_torch.cpu().numpy(), _ort(graph, {"input": x})["logits"], rtol=5e-3, atol=5e-3)
        reserved = engine.compiled.pool.statistics().reserved_bytes
        del got, as_torch
        engine.run({"input": x})  # the dropped output's block is reused
        assert engine.compiled.pool.statistics().reserved_bytes == reserved
