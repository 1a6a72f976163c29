"""Entry point module: registers the ``openvino`` backend, its INT8 pass and its raw baseline.

Nothing here imports OpenVINO or NNCF: factories import them when called, so that listing backends
works (and reports the reason) even when OpenVINO is missing.
"""

from __future__ import annotations

from typing import Any

from edgecore.hookspecs import hookimpl
from edgecore.specs import BackendSpec, BaselineSpec, PassSpec


def _backend_factory():
    from edgecore_openvino_npu.backend import OpenVinoBackend

    return OpenVinoBackend()


def _int8_factory(config: Any = None, **kwargs: Any):
    from edgecore_openvino_npu.quantize import Int8QuantizePass

    return Int8QuantizePass.from_config(config, **kwargs)


@hookimpl
def edgecore_backends():
    return [
        BackendSpec(
            name="openvino",
            factory=_backend_factory,
            priority=5,
            devices=("cpu", "gpu", "npu"),
            description="OpenVINO runtime: Intel NPU (static-shape buckets), CPU, GPU and AUTO",
        )
    ]


def _baseline(graph: Any, options: Any):
    from edgecore_openvino_npu.baseline import openvino_session

    return openvino_session(graph, options)


@hookimpl
def edgecore_bench_baselines():
    return [
        BaselineSpec(
            name="openvino",
            session=_baseline,
            description="raw OpenVINO CompiledModel + InferRequest.infer with the backend's properties",
        )
    ]


@hookimpl
def edgecore_passes():
    return [
        PassSpec(
            name="openvino_int8",
            factory=_int8_factory,
            stage="quantize",
            backends=("openvino",),
            exact=False,
            description="INT8 post-training quantization with NNCF (QDQ graph; accuracy-controlled with a validation function)",
        )
    ]
