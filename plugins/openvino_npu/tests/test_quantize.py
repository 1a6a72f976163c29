"""The openvino_int8 pass: NNCF INT8 on the digits CNN keeps top-1 within a point, through OpenVINO."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("nncf", reason="NNCF is not installed")

from edgecore import Engine, EngineConfig, zoo  # noqa: E402
from edgecore.errors import OptimizationError  # noqa: E402
from edgecore.optimize.manager import PassManager, is_quantized  # noqa: E402
from edgecore.optimize.config import OptimizationConfig  # noqa: E402
from edgecore_openvino_npu.quantize import quantize_int8  # noqa: E402

CONFIG = EngineConfig(backend="openvino", device="cpu", num_threads=2)


def _top1(graph, images, labels) -> float:
    with Engine(CONFIG).load(graph) as engine:
        return float((engine.run({"input": images})["logits"].argmax(1) == labels).mean())


@pytest.fixture(scope="module")
def digits():
    images, labels = zoo.digits_test_split()
    return images[:96], images[96:], labels[96:]


def test_quantize_int8_keeps_digits_accuracy(zoo_graph, digits):
    calibration, images, labels = digits
    graph = zoo_graph("digits_cnn")
    quantized = quantize_int8(graph, {"input": calibration}, subset_size=96)
    assert is_quantized(quantized)
    assert quantized.fingerprint != graph.fingerprint
    loss = 100 * (_top1(graph, images, labels) - _top1(quantized, images, labels))
    assert loss <= 1.0, f"int8 lost {loss:.2f} top-1 points"


def test_pass_through_the_pass_manager(zoo_graph, digits):
    calibration, images, labels = digits
    from edgecore.plugins import get_plugin_manager

    spec = get_plugin_manager().passes()["openvino_int8"]
    assert spec.stage == "quantize" and spec.backends == frozenset({"openvino"})
    config = OptimizationConfig(
        enable_graph_optimization=False, passes=("openvino_int8",),
        calibration_data={"input": images[:64]}, labels=labels[:64],
        custom_options={"openvino_int8": {"subset_size": 64}},
    )
    graph, report = PassManager(config, backend="openvino", engine_config=CONFIG).run(zoo_graph("digits_cnn"))
    record = report.passes[0]
    assert record.status == "kept", record.reason
    assert is_quantized(graph)


def test_accuracy_controlled_variant_calls_the_validation_function(zoo_graph, digits):
    calibration, images, labels = digits
    calls = []

    def top1(run, items):
        items = list(items)
        calls.append(len(items))
        hits = sum(int(run(feed)[0].argmax(1)[0] == label) for feed, label in items)
        return hits / len(items)

    validation = [({"input": images[i : i + 1]}, labels[i]) for i in range(32)]
    quantized = quantize_int8(zoo_graph("digits_cnn"), {"input": calibration[:32]}, validation_fn=top1,
                              validation_data=validation, max_drop=0.01)
    assert calls, "NNCF never validated"
    assert _top1(quantized, images, labels) >= 0.95


def test_bad_calibration_data_is_an_optimization_error(zoo_graph):
    with pytest.raises(OptimizationError) as info:
        quantize_int8(zoo_graph("digits_cnn"), {"image": np.zeros((4, 1, 8, 8), np.float32)})
    assert "'input'" in str(info.value) or "input" in str(info.value)
