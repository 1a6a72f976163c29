"""The NPU's static-shape bucket path, forced on the CPU device, gives the dynamic model's outputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgecore import Engine, EngineConfig
from edgecore.errors import ConfigurationError, InvalidInputError
from edgecore.tensor import DataType, TensorSpec
from edgecore_openvino_npu.buckets import BucketPlan

DYNAMIC = EngineConfig(backend="openvino", device="cpu", num_threads=2)


def _bucketed(sizes=True) -> EngineConfig:
    return EngineConfig(backend="openvino", device="cpu", num_threads=2, custom_options={"static_buckets": sizes})


def _assert_same(actual, expected, rtol=1e-5):
    assert set(actual) == set(expected)
    for name, want in expected.items():
        assert actual[name].shape == want.shape, f"{name}: {actual[name].shape} != {want.shape}"
        scale = max(float(np.abs(want).max()), 1e-6)
        err = float(np.abs(actual[name] - want).max()) / scale
        assert err <= rtol, f"output {name!r}: bucket path differs by {err:.3g} of its range"


def test_every_batch_size_1_to_8_matches_dynamic(zoo_graph, image_feeds):
    graph = zoo_graph("resnet_tiny")
    with Engine(DYNAMIC).load(graph) as dynamic, Engine(_bucketed({"batch": [1, 2, 4, 8]})).load(graph) as static:
        for batch in range(1, 9):
            feeds = image_feeds(graph, batch, seed=batch)
            _assert_same(static.run(feeds), dynamic.run(feeds))
        assert static.compiled.describe()["buckets"] == 4


@pytest.mark.parametrize("sequence", [5, 8, 11, 17, 23])
def test_bert_sequence_lengths_between_buckets_match_dynamic(zoo_graph, bert_feeds, sequence):
    graph = zoo_graph("bert_tiny")
    buckets = {"batch": [1, 2, 4], "sequence": [8, 16, 32]}
    with Engine(DYNAMIC).load(graph) as dynamic, Engine(_bucketed(buckets)).load(graph) as static:
        for batch in (1, 3):
            feeds = bert_feeds(batch, sequence, seed=sequence)
            _assert_same(static.run(feeds), dynamic.run(feeds))


def test_request_above_the_largest_bucket_is_refused_by_name(zoo_graph, image_feeds):
    graph = zoo_graph("digits_cnn")
    with Engine(_bucketed({"batch": [1, 2]})).load(graph) as engine:
        with pytest.raises(InvalidInputError) as info:
            engine.run(image_feeds(graph, 3))
        assert "'batch'" in str(info.value) and "2" in str(info.value) and "static_buckets" in str(info.value)
        assert engine.run(image_feeds(graph, 2))["logits"].shape == (2, 10)


def test_unknown_bucket_dimension_is_a_configuration_error(zoo_graph):
    with pytest.raises(ConfigurationError) as info:
        Engine(_bucketed({"sequence": [8]})).load(zoo_graph("digits_cnn"))
    assert "'sequence'" in str(info.value) and "batch" in str(info.value)


def test_prepare_buckets_compiles_ahead(zoo_graph, image_feeds):
    graph = zoo_graph("digits_cnn")
    with Engine(_bucketed({"batch": [1, 4]})).load(graph) as engine:
        assert engine.compiled.prepare_buckets() == 2
        assert engine.compiled.describe()["buckets"] == 2


def test_plan_pads_and_unpads():
    specs = [TensorSpec(name="ids", dtype=DataType.INT64, shape=("batch", "sequence"))]
    outs = [TensorSpec(name="h", dtype=DataType.FLOAT, shape=("batch", "sequence", 4)),
            TensorSpec(name="p", dtype=DataType.FLOAT, shape=("batch", 4))]
    plan = BucketPlan(specs, outs, {"batch": [1, 2, 4], "sequence": [8, 16]})
    ids = np.arange(3 * 5, dtype=np.int64).reshape(3, 5) + 1
    key, actual = plan.key([ids])
    assert (key, actual) == ((4, 8), (3, 5))
    (padded,) = plan.pad([ids], key, None)
    assert padded.shape == (4, 8) and (padded[:3, :5] == ids).all() and padded[3:].sum() == 0 and padded[:, 5:].sum() == 0
    h, p = np.ones((4, 8, 4), np.float32), np.ones((4, 4), np.float32)
    uh, up = plan.unpad([h, p], actual, key)
    assert uh.shape == (3, 5, 4) and uh.flags.c_contiguous and up.shape == (3, 4)
    assert len(plan.all_keys()) == 6
