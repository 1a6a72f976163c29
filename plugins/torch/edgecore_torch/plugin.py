"""Entry point module: registers the ``torch`` backend with edgecore.

Priority (higher wins under ``backend="auto"``): :data:`CPU_PRIORITY` = 5, below cpu_simd's 10, so
that ``auto`` on a machine without a GPU keeps ONNX Runtime; :data:`GPU_PRIORITY` = 25 when a GPU
is visible and the installed torch is not a CPU-only build, above cpu_simd and below TensorRT's 30.
Deciding reads the torch distribution's version and device files only; it never imports torch.
With ``device="gpu"`` only backends that serve GPUs compete, whatever their priority.
"""

from __future__ import annotations

import importlib.metadata
import os

from edgecore.hookspecs import hookimpl
from edgecore.specs import BackendSpec

CPU_PRIORITY = 5
GPU_PRIORITY = 25

#: Files whose presence says a GPU driver is loaded (NVIDIA, AMD ROCm).
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/proc/driver/nvidia/version", "/dev/kfd")


def priority(device_files: tuple[str, ...] = GPU_DEVICE_FILES) -> int:
    """:data:`GPU_PRIORITY` where a GPU and a GPU build of torch are present, else :data:`CPU_PRIORITY`."""
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return CPU_PRIORITY
    if "+cpu" in version:
        return CPU_PRIORITY
    return GPU_PRIORITY if any(os.path.exists(path) for path in device_files) else CPU_PRIORITY


def _factory():
    from edgecore_torch.backend import TorchBackend

    return TorchBackend()


@hookimpl
def edgecore_backends():
    return [
        BackendSpec(
            name="torch",
            factory=_factory,
            priority=priority(),
            devices=("cpu", "gpu"),
            description="edgecore's ONNX-to-torch lowering: CPU, CUDA (CUDA graphs), ROCm, MPS",
        )
    ]
