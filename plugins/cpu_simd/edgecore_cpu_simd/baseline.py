"""The raw-runtime baseline of ``cpu_simd``: a plain ``onnxruntime.InferenceSession`` built with the very
SessionOptions the backend uses, called the way onnxruntime's own users call it
(``session.run(None, feeds)``). ``edgecore bench --baseline`` compares the backend against it."""

from __future__ import annotations

from typing import Any

from edgecore.backend import CompileOptions
from edgecore.bench.registry import RawSession
from edgecore.graph import Graph


def onnxruntime_session(graph: Graph, options: CompileOptions) -> RawSession:
    """An ORT CPU session for ``graph`` with the backend's settings for ``options``."""
    import onnxruntime as ort

    from edgecore_cpu_simd.backend import CpuSimdBackend

    so = CpuSimdBackend().session_options(options)
    session = ort.InferenceSession(graph.runtime_model(options.cache_dir), so, providers=["CPUExecutionProvider"])
    run = session.run

    def call(feeds: Any) -> Any:
        return run(None, feeds)

    return RawSession(
        runtime="onnxruntime",
        version=ort.__version__,
        run=call,
        settings={
            "providers": session.get_providers(),
            "intra_op_num_threads": so.intra_op_num_threads,
            "inter_op_num_threads": so.inter_op_num_threads,
            "graph_optimization_level": str(so.graph_optimization_level),
            "execution_mode": str(so.execution_mode),
        },
    )
