"""edgecore backend on OpenVINO (NPU, CPU, GPU, AUTO) and its NNCF INT8 pass.

Importing this package does not import OpenVINO; :class:`OpenVinoBackend` does when it is used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OpenVinoBackend", "OpenVinoCompiledModel", "quantize_int8"]


def __getattr__(name: str) -> Any:
    if name == "OpenVinoBackend":
        from edgecore_openvino_npu.backend import OpenVinoBackend

        return OpenVinoBackend
    if name == "OpenVinoCompiledModel":
        from edgecore_openvino_npu.compiled import OpenVinoCompiledModel

        return OpenVinoCompiledModel
    if name == "quantize_int8":
        from edgecore_openvino_npu.quantize import quantize_int8

        return quantize_int8
    raise AttributeError(f"module 'edgecore_openvino_npu' has no attribute {name!r}")
