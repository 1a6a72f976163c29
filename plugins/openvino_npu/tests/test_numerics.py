"""Zoo models through the openvino backend agree with onnx.reference at the default precision (f32)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from edgecore import Engine, EngineConfig

CONFIG = EngineConfig(backend="openvino", device="cpu", num_threads=2)


def _reference(graph, feeds):
    proto = graph.to_proto()
    return dict(zip([o.name for o in proto.graph.output], ReferenceEvaluator(proto).run(None, feeds)))


def _assert_rel(actual, expected, rtol=1e-4):
    for name, want in expected.items():
        scale = max(float(np.abs(want).max()), 1e-6)
        err = float(np.abs(actual[name] - want).max()) / scale
        assert err <= rtol, f"output {name!r}: relative error {err:.3g} > {rtol}"


@pytest.mark.parametrize("name", ["resnet_tiny", "mobilenet_v2_tiny", "efficientnet_tiny", "digits_cnn"])
def test_image_models_match_reference(zoo_graph, image_feeds, name):
    graph = zoo_graph(name)
    feeds = image_feeds(graph, batch=2, seed=1)
    with Engine(CONFIG).load(graph) as engine:
        first = engine.run(feeds)
        second = engine.run(feeds)  # steady state: pooled output buffers
    expected = _reference(graph, feeds)
    _assert_rel(first, expected)
    _assert_rel(second, expected)


def test_bert_tiny_matches_reference(zoo_graph, bert_feeds):
    graph = zoo_graph("bert_tiny")
    feeds = bert_feeds(batch=2, sequence=12, seed=2)
    with Engine(CONFIG).load(graph) as engine:
        actual = engine.run(feeds)
    _assert_rel(actual, _reference(graph, feeds))


def test_steady_state_outputs_come_from_the_pool(zoo_graph, image_feeds):
    graph = zoo_graph("resnet_tiny")
    feeds = image_feeds(graph, batch=1)
    with Engine(CONFIG).load(graph) as engine:
        for _ in range(3):
            engine.run(feeds)
        before = engine.pool.statistics()
        for _ in range(20):
            engine.run(feeds)
        after = engine.pool.statistics()
    assert after.allocations - before.allocations == 20
    assert after.misses == before.misses, "steady-state runs allocated fresh output memory"


def test_out_buffers_are_filled(zoo_graph, image_feeds):
    graph = zoo_graph("digits_cnn")
    feeds = image_feeds(graph, batch=3)
    with Engine(CONFIG).load(graph) as engine:
        expected = engine.run(feeds)
        buffer = np.empty((3, 10), np.float32)
        result = engine.run(feeds, out={"logits": buffer})
    assert result["logits"] is buffer
    np.testing.assert_array_equal(buffer, expected["logits"])


def test_qdq_model_from_onnxruntime_quantizer_runs(zoo_graph, tmp_path):
    quantization = pytest.importorskip("onnxruntime.quantization")
    from edgecore import zoo

    images, labels = zoo.digits_test_split()

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"input": images[i : i + 1]} for i in range(32)])

        def get_next(self):
            return next(self.items, None)

    source, target = tmp_path / "digits.onnx", tmp_path / "digits_qdq.onnx"
    source.write_bytes(zoo_graph("digits_cnn").to_bytes())
    quantization.quantize_static(str(source), str(target), Reader(), quant_format=quantization.QuantFormat.QDQ)
    with Engine(CONFIG).load(str(target)) as engine:
        top1 = float((engine.run({"input": images})["logits"].argmax(1) == labels).mean())
    assert top1 >= 0.95
