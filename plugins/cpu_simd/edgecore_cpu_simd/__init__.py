"""edgecore backend on ONNX Runtime's CPU execution provider.

Importing this package (as the plugin manager does for the entry point) imports neither
onnxruntime nor numpy; :class:`CpuSimdBackend` does when it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgecore._lazy import lazy_exports

if TYPE_CHECKING:
    from edgecore_cpu_simd.backend import CpuSimdBackend
    from edgecore_cpu_simd.compiled import OrtCompiledModel

__all__ = ["CpuSimdBackend", "OrtCompiledModel"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {"CpuSimdBackend": "edgecore_cpu_simd.backend", "OrtCompiledModel": "edgecore_cpu_simd.compiled"},
    globals(),
)
