"""Entry point module: registers the ``cpu_simd`` backend and its ``int8`` quantization pass with edgecore."""

from __future__ import annotations

from edgecore.hookspecs import hookimpl
from edgecore.specs import BackendSpec, PassSpec


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
def edgecore_bench_baselines():
    from edgecore.specs import BaselineSpec

    return [
        BaselineSpec(
            name="cpu_simd",
            session=_baseline,
            description="raw onnxruntime InferenceSession with the backend's SessionOptions",
        )
    ]


def _int8(context):
    from edgecore_cpu_simd.quantize import Int8QuantizationPass

    return Int8QuantizationPass(context, options=context.options)


@hookimpl
def edgecore_passes():
    return [
        PassSpec(
            name="int8",
            factory=_int8,
            stage="quantize",
            description="INT8 through onnxruntime.quantization: static QDQ (min-max/percentile/entropy "
            "calibration, per-channel weights) or dynamic for transformers; most sensitive nodes kept in float",
        )
    ]
