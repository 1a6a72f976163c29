"""The raw-runtime baseline of the ``openvino`` backend, for ``edgecore bench --baseline`` and benchmarks.

A plain ``ov.CompiledModel`` compiled from the same ONNX bytes with the very properties the backend
resolves for the same :class:`~edgecore.backend.CompileOptions` (device, hint, threads, precision,
cache), called the way OpenVINO's own users call it: ``request.infer(feeds)``. ``zero_copy=True``
calls ``infer(feeds, share_inputs=True, share_outputs=True)`` instead -- OpenVINO's fastest form,
whose outputs are views that the next call overwrites.
"""

from __future__ import annotations

from typing import Any

from edgecore.backend import CompileOptions
from edgecore.graph import Graph

__all__ = ["openvino_request", "openvino_session"]


def openvino_request(graph: Graph, options: CompileOptions) -> tuple[Any, Any, dict[str, Any]]:
    """``(compiled model, infer request, properties)`` with the backend's settings for ``options``."""
    from edgecore_openvino_npu import _ov
    from edgecore_openvino_npu.backend import OpenVinoBackend
    from edgecore_openvino_npu.options import resolve

    settings = resolve(options, graph.fingerprint)
    properties = OpenVinoBackend.properties(settings)
    source = graph.runtime_model()
    if isinstance(source, bytes):
        compiled = _ov.core().compile_model(source, settings.device, properties, weights=b"")
    else:  # a path: OpenVINO maps the weights (external data beside it) instead of taking a copy
        compiled = _ov.core().compile_model(source, settings.device, properties)
    return compiled, compiled.create_infer_request(), {"device": settings.device, **properties}


def openvino_session(graph: Graph, options: CompileOptions, *, zero_copy: bool = False) -> Any:
    """A :class:`~edgecore.bench.registry.RawSession` over :func:`openvino_request`."""
    from edgecore.bench.registry import RawSession
    from edgecore_openvino_npu import _ov

    compiled, request, properties = openvino_request(graph, options)
    infer = request.infer

    if zero_copy:
        def call(feeds: Any) -> Any:
            return infer(feeds, share_inputs=True, share_outputs=True)
    else:
        def call(feeds: Any) -> Any:
            return infer(feeds)

    return RawSession(
        runtime="openvino", version=_ov.version(), run=call,
        settings={k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in properties.items()},
    )
