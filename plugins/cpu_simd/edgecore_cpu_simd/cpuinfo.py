"""Which SIMD extensions the host CPU has, in the names users know (flags read by edgecore core)."""

from __future__ import annotations

import functools
import os

# /proc/cpuinfo flag -> name users know. x86 and Arm spell them differently.
_FEATURES = {
    "sse4_2": "SSE4.2",
    "avx": "AVX",
    "avx2": "AVX2",
    "fma": "FMA",
    "f16c": "F16C",
    "avx512f": "AVX-512",
    "avx512bw": "AVX-512BW",
    "avx512_vnni": "AVX-512 VNNI",
    "avx512vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "avx512_fp16": "AVX-512 FP16",
    "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
    "asimd": "NEON",
    "asimddp": "NEON DOT",
    "sve": "SVE",
    "sve2": "SVE2",
    "i8mm": "I8MM",
    "bf16": "BF16",
}


@functools.cache
def cpu_description() -> tuple[str, tuple[str, ...]]:
    """``(model name, SIMD features)`` of this machine's CPU."""
    from edgecore.bench.machine import cpu_flags

    name, flags = cpu_flags()
    features: list[str] = []
    for flag, label in _FEATURES.items():
        if flag in flags and label not in features:
            features.append(label)
    return name, tuple(features)


def logical_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
