"""Entry point module: registers the ``tensorrt`` backend with edgecore.

Priority 30: above cpu_simd (10) and the torch backend on a GPU (25), so that ``backend="auto"``
picks TensorRT wherever it is available (it is only available with TensorRT, cuda-python and a CUDA
device). Registering imports neither TensorRT nor cuda-python.
"""

from __future__ import annotations

from edgecore.hookspecs import hookimpl
from edgecore.specs import BackendSpec

PRIORITY = 30


def _factory():
    from edgecore_cuda_trt.backend import TensorRTBackend

    return TensorRTBackend()


@hookimpl
def edgecore_backends():
    return [
        BackendSpec(
            name="tensorrt",
            factory=_factory,
            priority=PRIORITY,
            devices=("gpu", "npu"),  # npu: a Jetson's DLA cores
            description="NVIDIA TensorRT 10/11 (strongly typed networks, engine and timing caches, CUDA graphs)",
        )
    ]
