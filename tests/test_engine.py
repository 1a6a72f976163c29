"""Engine: backend choice, input checking, statistics, life cycle, DLPack and caller buffers."""

from __future__ import annotations

import numpy as np
import pytest

from edgecore import BackendUnavailableError, Engine, EngineConfig, InvalidInputError
from edgecore.errors import BackendExecutionError, EngineClosedError, ModelNotLoadedError
from edgecore.testing import OP_CASES, reference_outputs


def test_auto_picks_the_best_available_backend(conv_model):
    with Engine().load(conv_model) as engine:
        assert engine.backend == "cpu_simd"  # highest priority that runs every op


def test_unknown_backend_names_the_installed_ones(conv_model):
    with pytest.raises(BackendUnavailableError) as info:
        Engine(EngineConfig(backend="tpu_magic")).load(conv_model)
    assert "tpu_magic" in str(info.value) and "cpu_simd" in str(info.value)


def test_no_backend_for_device(conv_model):
    with pytest.raises(BackendUnavailableError, match="device 'npu'"):
        Engine(EngineConfig(device="npu", backend="auto")).load(conv_model) if not _has_npu() else pytest.skip("NPU present")


def _has_npu() -> bool:
    from edgecore.backend import backend_for
    from edgecore.plugins import get_plugin_manager

    for spec in get_plugin_manager().backends().values():
        if "npu" in spec.devices and backend_for(spec).availability().ok:
            return any(d.kind == "npu" for d in backend_for(spec).devices())
    return False


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="num_threads"):
        EngineConfig(num_threads=-1)
    with pytest.raises(ValueError, match="device"):
        EngineConfig(device="fpga")
    with pytest.raises(ValueError, match="preferred_batch_sizes"):
        EngineConfig(max_batch_size=4, preferred_batch_sizes=(8,))


def test_stats_count_and_percentiles(conv_case, conv_model):
    with Engine(EngineConfig(num_threads=1)).load(conv_model) as engine:
        for seed in range(20):
            engine.run(conv_case.feeds(seed=seed))
        with pytest.raises(InvalidInputError):
            engine.run({})
        stats = engine.stats()
    assert stats.total_inferences == 20
    assert 0 < stats.min_latency_ms <= stats.p50_latency_ms <= stats.p95_latency_ms <= stats.p99_latency_ms <= stats.max_latency_ms
    assert stats.batch_size_histogram == {1: 20}


def test_closed_engine_refuses(conv_case, conv_model):
    engine = Engine().load(conv_model)
    engine.close()
    with pytest.raises(EngineClosedError):
        engine.run(conv_case.feeds())
    with pytest.raises(ModelNotLoadedError, match="no model loaded"):
        Engine().run(conv_case.feeds())


def test_a_shared_dimension_name_is_the_runtimes_to_judge():
    """Inputs sharing a dimension name need not agree up front (onnxruntime does not require it); where
    the model cannot run them, the runtime's failure comes back as BackendExecutionError, naming it."""
    case = OP_CASES["Add"]
    with Engine().load(case.build()) as engine:
        with pytest.raises(BackendExecutionError, match="cpu_simd") as info:
            engine.run({"x": np.zeros((2, 6), np.float32), "z": np.zeros((3, 6), np.float32)})
        assert info.value.__cause__ is not None
        assert engine.run(case.feeds())  # and the engine keeps serving


class _DLPackOnly:
    """A foreign tensor that offers only the DLPack protocol (as torch/cupy/jax tensors do)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


def test_dlpack_inputs_are_accepted_without_copy(conv_case, conv_model):
    feeds = conv_case.feeds(seed=5)
    with Engine().load(conv_model) as engine:
        got = engine.run({"x": _DLPackOnly(feeds["x"])})
    np.testing.assert_allclose(got["y"], reference_outputs(conv_model, feeds)["y"], rtol=1e-4, atol=1e-5)


def test_non_contiguous_input(conv_case, conv_model):
    x = np.asfortranarray(conv_case.feeds(seed=6)["x"])
    with Engine().load(conv_model) as engine:
        got = engine.run({"x": x})
    np.testing.assert_allclose(got["y"], reference_outputs(conv_model, {"x": np.ascontiguousarray(x)})["y"], rtol=1e-4, atol=1e-5)


def test_out_buffers_are_filled(conv_case, conv_model):
    feeds = conv_case.feeds(seed=7)
    out = {"y": np.empty((1, 8, 10, 10), np.float32)}
    with Engine().load(conv_model) as engine:
        got = engine.run(feeds, out=out)
        assert got["y"] is out["y"]
        with pytest.raises(InvalidInputError, match="out buffer 'y'"):
            engine.run(feeds, out={"y": np.empty((1, 8, 10, 10), np.float64)})
    np.testing.assert_allclose(out["y"], reference_outputs(conv_model, feeds)["y"], rtol=1e-4, atol=1e-5)


def test_steady_state_outputs_come_from_the_pool(conv_case, conv_model):
    feeds = conv_case.feeds(seed=8)
    with Engine().load(conv_model) as engine:
        for _ in range(3):
            engine.run(feeds)
        before = engine.pool.statistics()
        for _ in range(50):
            engine.run(feeds)
        after = engine.pool.statistics()
    assert after.misses == before.misses  # nothing fresh after warm-up
    assert after.reserved_bytes == before.reserved_bytes


def test_a_held_view_keeps_its_output_from_being_reused(conv_case, conv_model):
    with Engine().load(conv_model) as engine:
        view = engine.run(conv_case.feeds(seed=1))["y"][0, 0]
        kept = view.copy()
        for seed in range(2, 8):
            engine.run(conv_case.feeds(seed=seed))
        np.testing.assert_array_equal(view, kept)


def test_unknown_custom_option_is_refused(conv_model):
    from edgecore.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="frobnicate"):
        Engine(EngineConfig(custom_options={"frobnicate": 1})).load(conv_model)
