"""What an engine holds: its pool plus what loading the model made the process hold (PSS)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

psutil = pytest.importorskip("psutil")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("edgecore_cpu_simd", reason="edgecore-cpu-simd is not installed")

from edgecore import Engine, EngineConfig  # noqa: E402


def _pss() -> int:
    return int(getattr(psutil.Process().memory_full_info(), "pss", 0))


@pytest.fixture
def model(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((512, 1024)).astype(np.float32), "w")  # 2 MiB
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 512])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1024])], [w],
    )
    path = tmp_path / "mm.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_memory_held_is_the_pool_plus_the_load(model, tmp_path, caplog):
    if not _pss():
        pytest.skip("this system reports no PSS")
    before = _pss()
    with caplog.at_level(logging.WARNING, logger="edgecore.engine"):
        engine = Engine(EngineConfig(backend="cpu_simd", num_threads=1, cache_dir=tmp_path, max_memory_usage=4096))
        engine.load(model)
    around = _pss() - before
    with engine:
        runtime = engine.memory_held_bytes()
        assert runtime is not None and 0 < runtime <= around + (1 << 20)
        assert "over max_memory_usage=4096" in caplog.text  # the model alone is past so small a budget
        engine.run({"x": np.ones((1, 512), np.float32)})
        pool = engine.pool.statistics().reserved_bytes
        assert pool >= 1024 * 4  # the output came from the pool
        assert engine.memory_held_bytes() == runtime + pool
