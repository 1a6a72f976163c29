"""The PassManager's contract: check, keep or roll back, report; the API, the engine and the CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx_ir as ir
import pytest

import edgecore
from edgecore.selection import load_graph
from edgecore import zoo
from edgecore.errors import BackendUnavailableError, OptimizationError
from edgecore.graph import Graph
from edgecore.optimize import OptimizationConfig, OptimizationReport, PassManager, optimize, select_passes
from edgecore.plugins import build_plugin_manager
from edgecore.specs import PassSpec


class _Perturb(ir.passes.InPlacePass):
    """Adds ``amount`` to every float initializer: a pass that breaks outputs."""

    def __init__(self, amount: float) -> None:
        super().__init__()
        self.amount = amount

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        for value in model.graph.initializers.values():
            array = value.const_value.numpy()
            if array.dtype.kind == "f" and array.ndim > 1:
                value.const_value = ir.tensor(array + np.float32(self.amount), name=value.name)
        return ir.passes.PassResult(model, modified=True)


class _Raise(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        raise RuntimeError("boom")


class _RenameOutput(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        model.graph.outputs[0].name = "renamed"
        return ir.passes.PassResult(model, modified=True)


class _Nothing(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, modified=False)


def _spec(name: str, pass_, *, exact: bool = False) -> PassSpec:
    return PassSpec(name=name, factory=lambda context: pass_, stage="graph", exact=exact)


@pytest.fixture(scope="module")
def digits():
    images, labels = zoo.digits_test_split()
    return load_graph("zoo:digits_cnn"), images[:200], labels[:200]


def _reference_outputs(graph: Graph, images: np.ndarray) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(graph.to_proto()).run(None, {"input": images})[0]


def test_passes_that_break_limits_raise_or_change_the_interface_are_rolled_back(digits):
    graph, images, _ = digits
    passes = [
        _spec("perturb_exact", _Perturb(0.01), exact=True),
        _spec("boom", _Raise()),
        _spec("rename", _RenameOutput()),
        _spec("nothing", _Nothing()),
        _spec("small_perturbation", _Perturb(1e-4)),
    ]
    config = OptimizationConfig(calibration_data={"input": images[:48]}, accuracy_budget=0.01)
    optimized, report = PassManager(config, passes=passes, onnx_reference=True).run(graph)
    status = {p.name: p.status for p in report.passes}
    assert status == {"perturb_exact": "rolled_back", "boom": "failed", "rename": "rolled_back",
                      "nothing": "unchanged", "small_perturbation": "kept"}
    assert "float rounding" in report.record("perturb_exact").reason
    assert "boom" in report.record("boom").reason
    assert "interface" in report.record("rename").reason
    assert report.kept == ("small_perturbation",)
    assert set(report.rolled_back) == {"perturb_exact", "boom", "rename"}
    assert [s.name for s in optimized.outputs] == ["logits"]


def test_impossible_budget_rolls_back_and_leaves_a_model_that_matches(digits):
    graph, images, labels = digits
    config = OptimizationConfig(enable_quantization=True, enable_pruning=True, calibration_data={"input": images},
                                labels=labels, accuracy_budget=-1.0)
    optimized, report = optimize(graph, config, backend="cpu_simd")
    assert report.record("graph_optimization").status == "kept"
    for name in ("structured_pruning", "int8"):
        record = report.record(name)
        assert record.status == "rolled_back", record.reason
        assert "breaks the budget -1" in record.reason
    text = str(report)
    assert "rolled_back" in text and "breaks the budget" in text
    np.testing.assert_allclose(_reference_outputs(optimized, images), _reference_outputs(graph, images),
                               rtol=1e-4, atol=1e-4)
    assert report.final_loss == pytest.approx(0.0, abs=1e-9)


def test_report_serializes_and_prints(digits):
    graph, images, labels = digits
    config = OptimizationConfig(enable_mixed_precision=True, calibration_data={"input": images}, labels=labels)
    _, report = optimize(graph, config, backend="cpu_simd")
    assert isinstance(report, OptimizationReport)
    data = json.loads(json.dumps(report.to_json()))
    assert data["metric"] == "top1_points" and data["backend"] == "cpu_simd"
    assert [p["name"] for p in data["passes"]] == ["graph_optimization", "fp16"]
    fp16 = data["passes"][1]
    for key in ("seconds", "before", "after", "vs_previous", "vs_original", "loss", "status", "reason"):
        assert key in fp16
    assert fp16["before"]["bytes"] > fp16["after"]["bytes"]
    assert data["original_accuracy"] == pytest.approx(report.original_accuracy)
    table = report.format_table()
    assert "graph_optimization" in table and "fp16" in table and "top-1" in table


def test_core_and_plugin_passes_register_through_the_hook():
    pm = build_plugin_manager()
    pm.check_pending()
    passes = pm.passes()
    for name, stage, exact in (("graph_optimization", "graph", True), ("structured_pruning", "prune", False),
                               ("unstructured_pruning", "prune", False), ("fp16", "precision", False)):
        assert passes[name].stage == stage and passes[name].exact is exact
    if "cpu_simd" in pm.backends():
        assert passes["int8"].stage == "quantize"


def test_select_passes_follows_the_flags_and_names_what_is_missing():
    pm = build_plugin_manager()
    registry = pm.passes()
    config = OptimizationConfig(enable_pruning=True, pruning_mode="unstructured", enable_mixed_precision=True)
    assert [s.name for s in select_passes(config, registry, "cpu_simd")] == [
        "graph_optimization", "unstructured_pruning", "fp16"]
    with pytest.raises(OptimizationError, match="'bf16'.*not registered"):
        select_passes(OptimizationConfig(enable_mixed_precision=True, mixed_precision_type="bf16"), registry, "x")
    with pytest.raises(OptimizationError, match="available"):
        select_passes(OptimizationConfig(passes=("nope",)), registry, "cpu_simd")


def test_config_validates_fields():
    with pytest.raises(ValueError, match="pruning_ratio"):
        OptimizationConfig(pruning_ratio=1.5)
    with pytest.raises(ValueError, match="custom_options"):
        OptimizationConfig(custom_options={"int8": 3})
    with pytest.raises(ValueError, match="labels"):
        OptimizationConfig(labels=np.zeros((2, 2)))
    assert OptimizationConfig().budget() == 0.01
    assert OptimizationConfig(labels=np.zeros(3, np.int64)).budget() == 1.0


def test_calibration_data_must_fit_the_model(digits):
    graph, images, labels = digits
    with pytest.raises(OptimizationError, match="lacks input"):
        optimize(graph, OptimizationConfig(calibration_data={"x": images}), onnx_reference=True)
    with pytest.raises(OptimizationError, match="labels"):
        optimize(graph, OptimizationConfig(calibration_data={"input": images}, labels=labels[:5]), onnx_reference=True)


def test_engine_optimize_recompiles_on_the_same_backend(digits):
    graph, images, labels = digits
    with edgecore.Engine(edgecore.EngineConfig(backend="cpu_simd")) as engine:
        engine.load(graph)
        before = engine.run({"input": images[:8]})["logits"]
        report = engine.optimize(OptimizationConfig(enable_quantization=True, calibration_data={"input": images},
                                                    labels=labels))
        assert report.backend == "cpu_simd" and report.record("int8").status == "kept"
        assert "QuantizeLinear" in {n.op_type for n in engine.graph.model.graph}
        after = engine.run({"input": images[:8]})["logits"]
    assert after.shape == before.shape
    assert np.mean(np.argmax(after, 1) == np.argmax(before, 1)) >= 0.875


def test_cli_optimize_writes_the_model_and_a_json_report(tmp_path, capsys, digits):
    from edgecore.cli import main

    _, images, labels = digits
    calib = tmp_path / "calib.npz"
    np.savez(calib, input=images, labels=labels)
    out = tmp_path / "digits_int8.onnx"
    code = main(["optimize", "zoo:digits_cnn", "-o", str(out), "--int8", "--calib", str(calib), "--budget", "1",
                 "--backend", "cpu_simd", "--json"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["output"] == str(out) and out.is_file()
    assert data["metric"] == "top1_points" and data["budget"] == 1.0
    assert {p["name"]: p["status"] for p in data["passes"]}["int8"] == "kept"
    assert Graph.load(out).inputs[0].name == "input"


def test_cli_optimize_table_and_usage_errors(tmp_path, capsys):
    from edgecore.cli import main

    out = tmp_path / "m.onnx"
    assert main(["optimize", "zoo:digits_cnn", "-o", str(out), "--prune", "0.25", "--budget", "inf",
                 "--samples", "4", "--backend", "cpu_simd"]) == 0
    text = capsys.readouterr().out
    assert "structured_pruning" in text and "wrote" in text
    assert main(["optimize", "zoo:digits_cnn", "-o", str(out), "--prune", "1.5"]) == 1
    with pytest.raises(SystemExit) as exc:
        main(["optimize", "zoo:digits_cnn"])
    assert exc.value.code == 2


def _available_backends() -> list[str]:
    pm = build_plugin_manager()
    names = []
    for name in pm.backends():
        try:
            with edgecore.Engine(edgecore.EngineConfig(backend=name), plugin_manager=pm) as engine:
                engine.load("zoo:digits_cnn")
            names.append(name)
        except (BackendUnavailableError, edgecore.UnsupportedOperatorError):
            continue
    return names


@pytest.fixture(scope="module")
def optimized_digits(digits):
    graph, images, labels = digits
    variants = {}
    for name, config in {
        "int8": OptimizationConfig(enable_quantization=True),
        "fp16": OptimizationConfig(enable_mixed_precision=True),
        "pruned": OptimizationConfig(enable_pruning=True, accuracy_budget=float("inf")),
    }.items():
        config = OptimizationConfig(**{**{k: getattr(config, k) for k in ("enable_quantization",
                                       "enable_mixed_precision", "enable_pruning", "accuracy_budget")},
                                       "calibration_data": {"input": images}, "labels": labels})
        variants[name], report = optimize(graph, config, backend="cpu_simd")
        assert len(report.kept) == 2, str(report)
    return variants


@pytest.mark.parametrize("backend", _available_backends())
def test_optimized_models_run_unchanged_on_every_available_backend(backend, optimized_digits, digits):
    _, images, labels = digits
    for name, graph in optimized_digits.items():
        with edgecore.Engine(edgecore.EngineConfig(backend=backend)) as engine:
            engine.load(graph.to_bytes())
            logits = engine.run({"input": images[:32]})["logits"]
        assert logits.shape == (32, 10)
        assert np.mean(np.argmax(logits, 1) == labels[:32]) > 0.9, (backend, name)


@pytest.mark.parametrize("backend", [b for b in _available_backends() if b != "cpu_simd"])
def test_int8_qdq_of_a_zoo_model_agrees_across_backends(backend):
    graph, _ = optimize("zoo:resnet_tiny", OptimizationConfig(enable_quantization=True, num_samples=4,
                                                              accuracy_budget=float("inf")), backend="cpu_simd")
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    outputs = {}
    for name in ("cpu_simd", backend):
        with edgecore.Engine(edgecore.EngineConfig(backend=name)) as engine:
            engine.load(graph.to_bytes())
            outputs[name] = engine.run({"input": x})["logits"].ravel()
    a, b = outputs["cpu_simd"], outputs[backend]
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.99


def test_each_pass_is_an_optimize_span_in_the_profiler(digits):
    from edgecore.profiling import get_profiler

    graph, images, _ = digits
    profiler = get_profiler()
    profiler.start_global_session("optimize-test")
    try:
        optimize(graph, OptimizationConfig(calibration_data={"input": images[:16]}), onnx_reference=True)
        spans = profiler.spans("optimize/graph_optimization", match={"status": "kept"})
    finally:
        profiler.stop_global_session()
    assert len(spans) == 1


def test_sample_sets_from_mappings_feed_lists_and_generated_inputs(digits):
    from edgecore.optimize import SampleSet
    from edgecore.tensor import DataType, TensorSpec

    graph, images, labels = digits
    batched = SampleSet.from_data({"input": images[:40]}, graph.inputs, labels=labels[:40])
    assert batched.rows == 40 and [len(f["input"]) for f in batched.feeds] == [16, 16, 8]
    assert batched.head(20).rows == 20 and len(batched.head(20).labels) == 20
    listed = SampleSet.from_data([{"input": images[i : i + 1]} for i in range(5)], graph.inputs)
    assert listed.rows == 5 and len(list(listed.single_rows())) == 5
    fixed = (TensorSpec(name="x", dtype=DataType.FLOAT, shape=(1, 3)),)
    rows = SampleSet.from_data({"x": np.zeros((6, 3), np.float32)}, fixed)
    assert rows.rows == 6 and all(f["x"].shape == (1, 3) for f in rows.feeds)
    bert = (TensorSpec(name="input_ids", dtype=DataType.INT64, shape=("batch", "sequence")),
            TensorSpec(name="attention_mask", dtype=DataType.INT64, shape=("batch", "sequence")))
    generated = SampleSet.generate(bert, count=3, sequence=7)
    assert generated.generated and generated.feeds[0]["input_ids"].shape == (3, 7)
    assert np.all(generated.feeds[0]["attention_mask"] == 1)
