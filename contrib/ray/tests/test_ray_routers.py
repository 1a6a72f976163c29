"""Round robin and weighted routing on Ray Serve's RequestRouter API, measured from the counts the
replicas report themselves (``replica_stats``): 400 sequential calls through one handle."""

from __future__ import annotations

import pytest

import edgecore_ray
from edgecore.errors import ConfigurationError

CALLS = 400


def _served(handle, calls: int, x) -> list[dict]:
    before = {r["replica"]: r["requests"] for r in edgecore_ray.replica_stats(handle, replicas=2)}
    for _ in range(calls):
        handle.infer.remote({"input": x}).result(timeout_s=60)
    after = edgecore_ray.replica_stats(handle, replicas=2)
    for row in after:
        row["served"] = row["requests"] - before.get(row["replica"], 0)
    assert sum(r["served"] for r in after) == calls, after
    return after


def test_round_robin_splits_sequential_calls_evenly(deploy, cluster):
    from ray import serve

    handle = deploy("round_robin", num_replicas=2, router="round_robin")
    rows = _served(handle, CALLS, cluster.inputs(0))
    shares = [r["served"] / CALLS for r in rows]
    assert all(0.45 <= s <= 0.55 for s in shares), rows
    serve.delete("round_robin")


def test_weighted_router_gives_weight_3_three_quarters(deploy, cluster):
    handle = deploy("weighted", num_replicas=2, router="weighted", weights=[3, 1])
    rows = _served(handle, CALLS, cluster.inputs(1))
    by_weight = {r["weight"]: r for r in rows}
    assert set(by_weight) == {3.0, 1.0}, rows  # each replica reports the weight of its rank
    share = by_weight[3.0]["served"] / CALLS
    assert 0.65 <= share <= 0.85, rows


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"router": "random"}, "unknown router 'random'; available: power_of_two, round_robin, weighted"),
        ({"router": "weighted"}, "needs weights"),
        ({"router": "round_robin", "weights": [1, 2]}, "used by router='weighted' only"),
        ({"router": "weighted", "weights": [3, 1, 1]}, r"one weight per replica \(2\), got 3"),
        ({"router": "weighted", "weights": [3, 0]}, "positive"),
        ({"num_replicas": 0}, "num_replicas must be an integer >= 1"),
    ],
)
def test_bad_settings_are_refused_with_what_is_available(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        edgecore_ray.deployment("zoo:digits_cnn", **kwargs)
