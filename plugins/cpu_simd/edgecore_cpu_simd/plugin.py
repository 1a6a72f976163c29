"""Entry point module: registers the ``cpu_simd`` backend with edgecore."""

from __future__ import annotations

from edgecore.hookspecs import hookimpl
from edgecore.specs import BackendSpec


def _factory():
    from edgecore_cpu_simd.backend import CpuSimdBackend

    return CpuSimdBackend()


@hookimpl
def edgecore_backends():
    return [
        BackendSpec(
            name="cpu_simd",
            factory=_factory,
            priority=10,
            devices=("cpu",),
            description="ONNX Runtime CPU execution provider (MLAS SIMD kernels)",
        )
    ]


def _baseline(graph, options):
    from edgecore_cpu_simd.baseline import onnxruntime_session

    return onnxruntime_session(graph, options)


@hookimpl
def edgecore_benchmarks():
    from edgecore.specs import ScenarioSpec

    return [
        ScenarioSpec(
            name="baseline:cpu_simd",
            runner=_baseline,
            description="raw onnxruntime InferenceSession with the backend's SessionOptions",
        )
    ]
