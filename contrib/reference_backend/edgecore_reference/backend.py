"""The ``reference`` backend: onnx.reference's evaluator behind the backend contract."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Mapping

import numpy as np

from edgecore.backend import Availability, Backend, CompiledModel, CompileOptions, DeviceInfo, op_name
from edgecore.inputs import fill_out

if TYPE_CHECKING:
    from edgecore.graph import Graph


class ReferenceCompiled(CompiledModel):
    backend = "reference"

    def __init__(self, graph: Graph) -> None:
        from onnx.reference import ReferenceEvaluator

        self.inputs, self.outputs = graph.inputs, graph.outputs
        self._proto = graph.to_proto()
        self._local = threading.local()  # ReferenceEvaluator keeps state between runs: one per thread
        self._factory = ReferenceEvaluator
        self._names = [spec.name for spec in self.outputs]

    def _run(self, feeds: dict[str, np.ndarray], out: Mapping[str, np.ndarray] | None, deadline_ns: int = 0) -> dict[str, np.ndarray]:
        evaluator = getattr(self._local, "evaluator", None)
        if evaluator is None:
            evaluator = self._local.evaluator = self._factory(self._proto)
        results = dict(zip(self._names, evaluator.run(None, dict(feeds))))
        return fill_out(results, out)  # core checked ``out``; a buffer of another shape raises there


class ReferenceBackend(Backend):
    name = "reference"

    def availability(self) -> Availability:
        return Availability(ok=True)

    def devices(self) -> list[DeviceInfo]:
        return [DeviceInfo(name="cpu", kind="cpu", description="onnx.reference (pure Python)")]

    def unsupported_ops(self, graph: Graph) -> list[str]:
        from onnx.reference.ops import load_op

        missing = []
        for domain, op in sorted(graph.op_types()):
            try:
                load_op(domain, op, version=graph.model.opset_imports.get(domain, graph.opset))
            except Exception:
                missing.append(op_name(domain, op))
        return missing

    def compile(self, graph: Graph, options: CompileOptions) -> ReferenceCompiled:
        return ReferenceCompiled(graph)

