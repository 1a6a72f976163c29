"""The machine a benchmark ran on: CPU, cores, memory, OS, Python, and versions of edgecore, its
plugins and every inference runtime installed. Read from metadata only: no runtime is imported."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["machine_info", "cpu_flags", "RUNTIMES"]

#: Distributions whose versions a benchmark records when installed.
RUNTIMES = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-openvino",
    "openvino",
    "tensorrt",
    "tensorrt-cu12",
    "tensorrt-cu13",
    "cuda-python",
    "torch",
    "onnx",
    "onnx-ir",
    "onnxscript",
    "numpy",
)

_SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "asimd", "sve")


@functools.cache
def cpu_flags() -> tuple[str, frozenset[str]]:
    """``(model name, feature flags)`` of this CPU as the OS reports them (Linux /proc/cpuinfo)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return name, frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model") and value.strip():
            name = value.strip()
        elif key in ("flags", "Features"):
            flags.update(value.split())
    return name, frozenset(flags)


def _cpu() -> tuple[str, tuple[str, ...]]:
    name, flags = cpu_flags()
    return name, tuple(flag for flag in _SIMD_FLAGS if flag in flags)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _plugins() -> dict[str, dict[str, str | None]]:
    found = {}
    for ep in importlib.metadata.entry_points(group="edgecore"):
        dist = ep.dist
        found[ep.name] = {
            "module": ep.value,
            "distribution": dist.name if dist is not None else None,
            "version": dist.version if dist is not None else None,
        }
    return found


def machine_info() -> dict[str, Any]:
    """Facts about this machine and software, as JSON-ready values."""
    import psutil

    cpu, simd = _cpu()
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    frequency = psutil.cpu_freq()
    from edgecore import __version__

    return {
        "cpu": cpu,
        "cpu_simd": list(simd),
        "cpu_max_mhz": round(frequency.max, 1) if frequency and frequency.max else None,
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "usable_cores": affinity,
        "memory_total_mb": round(psutil.virtual_memory().total / 2**20, 1),
        "load_average": load,
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "edgecore": __version__,
        "runtimes": {name: version for name in RUNTIMES if (version := _version(name)) is not None},
        "plugins": _plugins(),
    }
