"""edgecore backend on ONNX Runtime's CPU execution provider."""

from edgecore_cpu_simd.backend import CpuSimdBackend
from edgecore_cpu_simd.compiled import OrtCompiledModel

__all__ = ["CpuSimdBackend", "OrtCompiledModel"]
