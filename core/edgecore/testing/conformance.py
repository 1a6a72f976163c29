"""The backend conformance suite: pytest classes every backend plugin runs in its own tests.

Subclass :class:`BackendConformance` in a test module of your plugin and name the backend::

    from edgecore.testing import BackendConformance

    class TestMyBackend(BackendConformance):
        backend = "my_backend"
        known_gaps = {"test_op_matches_reference[Softmax]": "no Softmax kernel yet"}

Every check compares against ``onnx.reference`` or a direct run on the same inputs. A check listed in
``known_gaps`` is marked xfail with its reason, strictly: when the gap closes the suite says so.
Nothing is skipped silently, and a ``known_gaps`` key that names no test of the suite fails
``test_known_gaps_name_tests`` with the list of valid ids.

Covered: numerics per operator, dynamic batch, ``-1`` dims, outputs whose shape only the run
knows (TopK with K as an input, NonZero), ``out`` buffers (filled in place; bad ones refused with
:class:`~edgecore.errors.InvalidInputError`), bad inputs, unsupported operators, ``close()``, threads.
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
from edgecore.errors import EngineClosedError, InvalidInputError, UnsupportedOperatorError
from edgecore.testing.graphs import OP_CASES, OpCase, make_model, nonzero_model, topk_model, unknown_dims_model

__all__ = ["BackendConformance", "reference_outputs"]


def reference_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of ``onnx.reference`` for ``model`` on ``feeds``, by output name."""
    names = [o.name for o in model.graph.output]
    return dict(zip(names, ReferenceEvaluator(model).run(None, feeds)))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


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

    # -- the suite itself --------------------------------------------------------------------------

    def test_known_gaps_name_tests(self, request: pytest.FixtureRequest) -> None:
        """Every ``known_gaps`` key is the id of a test of this suite (a misspelt one would hide
        nothing and check nothing)."""
        valid = sorted({item.name for item in request.node.parent.collect() if isinstance(item, pytest.Item)})
        unknown = sorted(set(self.known_gaps) - set(valid))
        assert not unknown, (
            f"{type(self).__name__}.known_gaps names no test of the suite: {unknown}; valid test ids: {valid}"
        )

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

    # -- shapes: -1 dims, outputs whose shape only the run knows -----------------------------------

    @pytest.mark.parametrize("shape", [(1, 4, 1), (3, 4, 7)])
    def test_minus_one_dims_take_any_size(self, shape: tuple[int, ...]) -> None:
        model = unknown_dims_model()
        feeds = {"x": np.random.default_rng(5).standard_normal(shape).astype(np.float32)}
        with self.make_engine(model) as engine:
            assert engine.inputs[0].shape == (None, 4, None)
            self.assert_close(engine.run(feeds), reference_outputs(model, feeds))

    @pytest.mark.parametrize("k", [1, 4, 10])
    def test_data_dependent_shape_topk(self, k: int) -> None:
        model = topk_model()
        feeds = {"x": np.random.default_rng(k).standard_normal((3, 10)).astype(np.float32), "k": np.array([k], np.int64)}
        with self.make_engine(model) as engine:
            result = engine.run(feeds)
            assert result["values"].shape == (3, k) and result["indices"].shape == (3, k)
            self.assert_close(result, reference_outputs(model, feeds))

    @pytest.mark.parametrize("nonzero", [0, 1, 9])
    def test_data_dependent_shape_nonzero(self, nonzero: int) -> None:
        model = nonzero_model()
        x = np.zeros((2, 6), np.float32)
        x.flat[np.random.default_rng(nonzero).permutation(12)[:nonzero]] = 1.5
        with self.make_engine(model) as engine:
            result = engine.run({"x": x})
            assert result["y"].shape == (2, nonzero)
            self.assert_close(result, reference_outputs(model, {"x": x}))

    # -- out: buffers filled in place, bad buffers refused -----------------------------------------

    def test_out_buffers_are_filled(self) -> None:
        op = OP_CASES["MLP"]
        model = op.build()
        feeds = op.feeds(batch=3, seed=7)
        expected = reference_outputs(model, feeds)
        with self.make_engine(model) as engine:
            buffer = np.full((3, 4), np.nan, np.float32)
            result = engine.run(feeds, out={"y": buffer})
            assert np.shares_memory(result["y"], buffer), "the result must be the caller's buffer"
            self.assert_close({"y": buffer}, expected)
            again = engine.run(op.feeds(batch=3, seed=8), out={"y": buffer})  # the same buffer, reused
            self.assert_close({"y": buffer}, reference_outputs(model, op.feeds(batch=3, seed=8)))
            assert np.shares_memory(again["y"], buffer)

    def test_out_for_some_outputs_only(self) -> None:
        model = topk_model()
        feeds = {"x": np.random.default_rng(3).standard_normal((2, 10)).astype(np.float32), "k": np.array([3], np.int64)}
        expected = reference_outputs(model, feeds)
        with self.make_engine(model) as engine:
            indices = np.zeros((2, 3), np.int64)
            result = engine.run(feeds, out={"indices": indices})
            self.assert_close({"values": result["values"], "indices": indices}, expected)

    @pytest.mark.parametrize(
        "make, words",
        [
            (lambda: np.zeros((3, 4), np.float64), ["'y'", "float32"]),
            (lambda: np.zeros((4, 3), np.float32).T, ["'y'", "contiguous"]),
            (lambda: _read_only(np.zeros((3, 4), np.float32)), ["'y'", "writeable"]),
            (lambda: [[0.0] * 4] * 3, ["'y'", "numpy array"]),
            (lambda: np.zeros((3, 5), np.float32), ["'y'"]),
            (lambda: np.zeros((2, 4), np.float32), ["'y'"]),
            (lambda: np.zeros((12,), np.float32), ["'y'"]),
        ],
        ids=["dtype", "transposed", "read-only", "list", "wrong-dim", "wrong-batch", "wrong-rank"],
    )
    def test_bad_out_buffer_is_refused(self, make, words) -> None:
        op = OP_CASES["MLP"]
        model = op.build()
        feeds = op.feeds(batch=3, seed=2)
        buffer = make()
        with self.make_engine(model) as engine:
            with pytest.raises(InvalidInputError) as info:
                engine.run(feeds, out={"y": buffer})
            for word in words:
                assert word in str(info.value), f"{word!r} not in error: {info.value}"
            with pytest.raises(InvalidInputError, match="'nope'"):
                engine.run(feeds, out={"nope": np.zeros((3, 4), np.float32)})
            self.assert_close(engine.run(feeds), reference_outputs(model, feeds))  # still serving

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

    # -- close -------------------------------------------------------------------------------------

    def test_close(self) -> None:
        op = OP_CASES["Gemm"]
        model = op.build()
        feeds = op.feeds(batch=2, seed=4)
        engine = self.make_engine(model)
        other = self.make_engine(model)  # a second engine on the same graph is not affected
        engine.run(feeds)
        engine.close()
        engine.close()  # closing twice is harmless
        with pytest.raises(EngineClosedError):
            engine.run(feeds)
        self.assert_close(other.run(feeds), reference_outputs(model, feeds))
        compiled = other.compiled
        other.close()
        compiled.close()  # the compiled model's own close is idempotent too

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
