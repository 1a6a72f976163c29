"""Checks that can judge, and checks that run where the engine would: the optimizer on a model whose
outputs ignore random inputs, on its own plugin manager, without building an Engine."""

from __future__ import annotations

import json
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgecore import Engine, EngineConfig, hookimpl
from edgecore.backend import Availability, Backend
from edgecore.config import EngineConfig as Config
from edgecore.optimize import ONNX_REFERENCE, OptimizationConfig, optimize, signal_of
from edgecore.optimize.evaluation import Evaluator, SampleSet
from edgecore.plugins import build_plugin_manager
from edgecore.specs import BackendSpec, ModelSpec

RNG = np.random.default_rng(0)


def flat_detector() -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Sigmoid whose weights are so small, and bias so negative, that
    on standard-normal inputs it answers a "probability map" of ~1e-5 whatever the input (like a text
    detector fed noise); inputs ~2000 times larger reach the map."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, 8, 8])
    y = helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["n", 4, 6, 6])
    inits = [
        numpy_helper.from_array((RNG.standard_normal((4, 3, 3, 3)) * 1e-5).astype(np.float32), "w"),
        numpy_helper.from_array(np.full(4, -11.5, np.float32), "b"),
        numpy_helper.from_array(np.ones(4, np.float32), "scale"),
        numpy_helper.from_array(np.zeros(4, np.float32), "beta"),
        numpy_helper.from_array(np.zeros(4, np.float32), "mean"),
        numpy_helper.from_array(np.ones(4, np.float32), "var"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["c"]),
        helper.make_node("BatchNormalization", ["c", "scale", "beta", "mean", "var"], ["bn"]),
        helper.make_node("Sigmoid", ["bn"], ["prob"]),
    ]
    graph = helper.make_graph(nodes, "flat_detector", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_signal_of_tells_flat_outputs_from_informative_ones():
    varying = RNG.standard_normal((8, 5)).astype(np.float32)
    flat = np.full((8, 5), 1e-5, np.float32) + RNG.standard_normal((8, 5)).astype(np.float32) * 1e-12
    signal = signal_of([varying, flat, np.zeros((8, 2), np.float32)], ["scores", "prob", "zeros"])
    assert signal.can_judge and signal.judged == (0,)
    assert [o.name for o in signal.flat] == ["prob", "zeros"]
    assert "nearly the same for all 8 samples" in signal.reason and "all zeros" in signal.reason
    assert not signal_of([flat], ["prob"]).can_judge
    assert signal_of([varying[:1]], ["one_sample"]).can_judge  # one sample: nothing to measure across


def test_a_reference_without_signal_says_the_check_cannot_judge():
    config = OptimizationConfig(enable_mixed_precision=True, num_samples=8)
    graph, report = optimize(flat_detector(), config, onnx_reference=True)
    assert not report.can_judge
    assert "prob" in report.check_problem and "--calib" in report.check_problem
    graph_pass, fp16 = report.record("graph_optimization"), report.record("fp16")
    # the exact pass is kept (its outputs equal the previous graph's) but flagged as not judged
    assert graph_pass.status == "kept" and not graph_pass.judged and graph_pass.loss is None
    assert "cannot judge" in graph_pass.reason
    # a lossy pass is not run on a check that cannot tell good from bad
    assert fp16.status == "skipped" and not fp16.judged and "cannot judge" in fp16.reason
    assert report.final_agreement is None and report.final_loss is None
    text = str(report)
    assert "CHECK CANNOT JUDGE" in text and "cosine to original" not in text and "not judged" in text
    data = report.to_json()
    assert data["check"]["can_judge"] is False and "--calib" in data["check"]["problem"]
    assert json.loads(json.dumps(data))["passes"][1]["judged"] is False

    # real samples, on which the model answers: the same run is judged as usual
    real = {"image": (RNG.standard_normal((8, 3, 8, 8)) * 2e3).astype(np.float32)}
    _, judged = optimize(flat_detector(), OptimizationConfig(enable_mixed_precision=True, calibration_data=real),
                         onnx_reference=True)
    assert judged.can_judge and judged.check_problem == ""
    fp16 = judged.record("fp16")
    assert fp16.judged and fp16.status in ("kept", "rolled_back") and fp16.loss is not None
    assert judged.final_agreement is not None and "cosine to original" in str(judged)


def test_cli_warns_that_the_check_cannot_judge(tmp_path, capsys):
    pytest.importorskip("edgecore_cpu_simd")
    from edgecore.cli import main

    model = tmp_path / "flat.onnx"
    onnx.save(flat_detector(), model)
    assert main(["optimize", str(model), "-o", str(tmp_path / "out.onnx"), "--fp16", "--samples", "4"]) == 0
    captured = capsys.readouterr()
    assert "CHECK CANNOT JUDGE" in captured.out
    assert "cannot judge" in captured.err and "--calib" in captured.err
    assert main(["optimize", str(model), "-o", str(tmp_path / "out.onnx"), "--samples", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["check"]["can_judge"] is False


# -- where the checks run ------------------------------------------------------------------------------


class _OnnxReferenceBackend(Backend):
    """A third-party backend on onnx.reference (what a plugin author writes first)."""

    name = "my_ref"

    def availability(self) -> Availability:
        return Availability(ok=True)

    def compile(self, graph, options):
        from onnx.reference import ReferenceEvaluator

        from edgecore.backend import CompiledModel

        session = ReferenceEvaluator(graph.to_proto())
        names = [o.name for o in graph.outputs]
        compiled_options.append(options)

        class Compiled(CompiledModel):
            backend = "my_ref"
            inputs, outputs = graph.inputs, graph.outputs

            def _run(self, feeds, out, deadline_ns):
                return dict(zip(names, session.run(None, dict(feeds))))

        return Compiled()


class _BrokenCompiler(Backend):
    name = "broken_compiler"

    def availability(self) -> Availability:
        return Availability(ok=True)

    def compile(self, graph, options):
        raise RuntimeError("kernel library libfoo.so not found")


compiled_options: list = []


def _module(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        setattr(module, hook_name, hookimpl(function))
    return module


def test_optimize_uses_its_plugin_manager_and_builds_no_engine():
    started: list = []
    model = flat_detector()
    mine = _module(
        "my_plugin",
        edgecore_backends=lambda: [
            BackendSpec(name="broken_compiler", factory=_BrokenCompiler, priority=100),
            BackendSpec(name="my_ref", factory=_OnnxReferenceBackend, priority=90),
        ],
        edgecore_models=lambda: [ModelSpec(name="flat", builder=lambda seed=0: model)],
        edgecore_engine_started=lambda engine: started.append(engine),
    )
    pm = build_plugin_manager(entrypoints=False)
    pm.register(mine, name="my_plugin")
    pm.check_pending()
    compiled_options.clear()
    real = {"image": (RNG.standard_normal((4, 3, 8, 8)) * 2e3).astype(np.float32)}
    config = Config(num_threads=1, custom_options={})
    graph, report = optimize("zoo:flat", OptimizationConfig(calibration_data=real), plugin_manager=pm,
                             engine_config=config)
    assert report.backend == "my_ref"  # the zoo name and the backends came from pm; the broken one fell back
    assert started == []  # no Engine was built: no engine hooks fired
    assert compiled_options and all(o.memory_pool is not None for o in compiled_options)  # as an engine compiles
    with Engine(config, plugin_manager=pm) as engine:
        engine.load("zoo:flat")
        expected = engine.config.instance_options(engine.pool)
    assert all(_without_pool(o) == _without_pool(expected) for o in compiled_options)


def _without_pool(options):
    import attrs

    return attrs.evolve(options, memory_pool=None)


def test_engine_optimize_goes_through_the_hook_and_a_plugin_can_take_it_over():
    calls = []

    class TakeOver:
        @hookimpl(tryfirst=True)
        def edgecore_optimize(self, graph, config, backend, engine_config, plugin_manager):
            calls.append((graph.name, backend, engine_config.num_threads))
            return graph, "my report"

    pm = build_plugin_manager(entrypoints=False)
    pm.register(types.SimpleNamespace(edgecore_backends=hookimpl(
        lambda: [BackendSpec(name="my_ref", factory=_OnnxReferenceBackend, priority=1)])), name="mine")
    with Engine(EngineConfig(num_threads=1), plugin_manager=pm) as engine:
        engine.load(flat_detector())
        assert engine.optimize().__class__.__name__ == "OptimizationReport"  # core's optimizer, trylast
        pm.register(TakeOver(), name="take_over")
        assert engine.optimize() == "my report"
    assert calls == [("flat_detector", "my_ref", 1)]


def test_the_name_reference_is_the_backend_plugin_not_onnx_reference():
    pm = build_plugin_manager()
    real = {"image": (RNG.standard_normal((4, 3, 8, 8)) * 2e3).astype(np.float32)}
    config = OptimizationConfig(calibration_data=real)
    _, checked = optimize(flat_detector(), config, onnx_reference=True, plugin_manager=pm)
    assert checked.backend == ONNX_REFERENCE
    if "reference" not in pm.backends():
        pytest.skip("the edgecore-reference plugin is not installed")
    _, report = optimize(flat_detector(), config, backend="reference", plugin_manager=pm)
    assert report.backend == "reference"
    samples = SampleSet.from_config(config, flat_detector_inputs())
    evaluator = Evaluator(samples, backend="reference", plugin_manager=pm)
    from edgecore.graph import Graph

    evaluator.outputs(Graph.load(flat_detector()))
    assert evaluator._spec is pm.backends()["reference"]


def flat_detector_inputs():
    from edgecore.graph import Graph

    return Graph.load(flat_detector()).inputs
