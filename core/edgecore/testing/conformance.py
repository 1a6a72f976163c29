"""The backend conformance suite: pytest classes every backend plugin runs in its own tests.

Subclass :class:`BackendConformance` in a test module of your plugin and name the backend::

    from edgecore.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        backend = "my_backend"
        known_gaps = {"test_op_matches_reference[Softmax]": "no Softmax kernel yet"}

Every check compares against ``onnx.reference`` or a direct run on the same inputs. A check listed in
``known_gaps`` is marked xfail with its reason, strictly: when the gap closes the suite says so.
Nothing is skipped silently.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from edgecore.backend import backend_for
from edgecore.config import EngineConfig
from edgecore.engine import Engine
from edgecore.errors import InvalidInputError, UnsupportedOperatorError
from edgecore.testing.graphs import OP_CASES, OpCase, make_model

__all__ = ["BackendConformance", "reference_outputs"]


def reference_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of ``onnx.reference`` for ``model`` on ``feeds``, by output name."""
    names = [o.name for o in model.graph.output]
    return dict(zip(names, ReferenceEvaluator(model).run(None, feeds)))


class BackendConformance:
    """Checks a backend against the engine's contract. Set ``backend``; optionally tune the rest."""

    backend: ClassVar[str] = ""
    #: EngineConfig fields every engine of this suite gets (device, threads, precision, ...).
    config: ClassVar[dict[str, Any]] = {}
    #: test node id -> reason, for checks this backend is known to fail (run as strict xfail).
    known_gaps: ClassVar[dict[str, str]] = {}
    rtol: ClassVar[float] = 1e-4
    atol: ClassVar[float] = 1e-5

    # -- fixtures ----------------------------------------------------------------------------------

    @pytest.fixture(autouse=True)
    def _known_gap(self, request: pytest.FixtureRequest) -> None:
        reason = self.known_gaps.get(request.node.name)
        if reason:
            request.applymarker(pytest.mark.xfail(reason=f"known gap of {self.backend}: {reason}", strict=True))

    def make_engine(self, model: Any, **overrides: Any) -> Engine:
        assert self.backend, f"{type(self).__name__}.backend must name the backend under test"
        return Engine(EngineConfig(backend=self.backend, **{**self.config, **overrides})).load(model)

    def assert_close(self, actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
        assert set(actual) == set(expected), f"outputs {sorted(actual)} != expected {sorted(expected)}"
        for name, want in expected.items():
            np.testing.assert_allclose(actual[name], want, rtol=self.rtol, atol=self.atol, err_msg=f"output {name!r}")

    # -- the backend itself ------------------------------------------------------------------------

    def test_available_with_devices(self) -> None:
        from edgecore.plugins import get_plugin_manager

        spec = get_plugin_manager().backends().get(self.backend)
        assert spec is not None, f"backend {self.backend!r} is not registered"
        backend = backend_for(spec)
        availability = backend.availability()
        assert availability.ok, availability.reason
        devices = backend.devices()
        assert devices and all(d.name and d.kind in ("cpu", "gpu", "npu") for d in devices)

    # -- numerics ----------------------------------------------------------------------------------

    @pytest.mark.parametrize("case", sorted(OP_CASES))
    def test_op_matches_reference(self, case: str) -> None:
        op: OpCase = OP_CASES[case]
        model = op.build()
        feeds = op.feeds(batch=2, seed=11)
        with self.make_engine(model) as engine:
            self.assert_close(engine.run(feeds), reference_outputs(model, feeds))

    @pytest.mark.parametrize("batch", [1, 3, 8])
    def test_dynamic_batch(self, batch: int) -> None:
        op = OP_CASES["MLP"]
        model = op.build()
        feeds = op.feeds(batch=batch, seed=batch)
        with self.make_engine(model) as engine:
            batched = engine.run(feeds)
            self.assert_close(batched, reference_outputs(model, feeds))
            for i in range(batch):  # each item computed as if alone
                single = engine.run({k: v[i : i + 1] for k, v in feeds.items()})
                self.assert_close(single, {k: v[i : i + 1] for k, v in batched.items()})

    def test_outputs_belong_to_the_caller(self) -> None:
        op = OP_CASES["Gemm"]
        with self.make_engine(op.build()) as engine:
            first = engine.run(op.feeds(seed=1))
            kept = {k: v.copy() for k, v in first.items()}
            for seed in range(2, 6):
                engine.run(op.feeds(seed=seed))
            self.assert_close(first, kept)

    # -- bad input: a named error, and the engine keeps serving ------------------------------------

    @pytest.mark.parametrize(
        "mutate, words",
        [
            (lambda f: {**f, "x": f["x"].astype(np.float64)}, ["'x'", "float32", "float64"]),
            (lambda f: {**f, "x": f["x"][0]}, ["'x'", "rank 4"]),
            (lambda f: {**f, "x": np.zeros((1, 3, 10, 11), np.float32)}, ["'x'", "dimension 3", "10"]),
            (lambda f: {}, ["missing", "'x'"]),
            (lambda f: {**f, "extra": f["x"]}, ["unknown", "'extra'"]),
            (lambda f: {"X": f["x"]}, ["missing", "'x'", "unknown", "'X'"]),
        ],
        ids=["wrong-dtype", "wrong-rank", "wrong-dim", "missing", "extra", "misspelt"],
    )
    def test_bad_input_is_named_and_engine_keeps_serving(self, mutate, words) -> None:
        op = OP_CASES["Conv"]
        model = op.build()
        feeds = op.feeds(seed=3)
        with self.make_engine(model) as engine:
            with pytest.raises(InvalidInputError) as info:
                engine.run(mutate(feeds))
            for word in words:
                assert word in str(info.value), f"{word!r} not in error: {info.value}"
            self.assert_close(engine.run(feeds), reference_outputs(model, feeds))

    def test_unsupported_operator_is_reported(self) -> None:
        node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
        model = make_model(
            [node],
            [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])],
        )
        model.opset_import.append(helper.make_opsetid("com.example", 1))
        from edgecore.graph import Graph

        graph = Graph.load(model, check=False)
        with pytest.raises(UnsupportedOperatorError) as info:
            Engine(EngineConfig(backend=self.backend, **self.config)).load(graph)
        assert "com.example::Frobnicate" in str(info.value)

    # -- threads -----------------------------------------------------------------------------------

    def test_concurrent_calls_agree_with_serial(self) -> None:
        op = OP_CASES["Conv"]
        requests = [op.feeds(batch=1 + i % 3, seed=i) for i in range(24)]
        with self.make_engine(op.build()) as engine:
            expected = [engine.run(f) for f in requests]
            results: dict[int, dict[str, np.ndarray]] = {}
            errors: list[BaseException] = []

            def client(worker: int) -> None:
                try:
                    for _ in range(3):
                        for i in range(worker, len(requests), 6):
                            results[i] = engine.run(requests[i])
                except BaseException as exc:  # surfaced below
                    errors.append(exc)

            threads = [threading.Thread(target=client, args=(w,)) for w in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors
            for i, want in enumerate(expected):
                self.assert_close(results[i], want)
