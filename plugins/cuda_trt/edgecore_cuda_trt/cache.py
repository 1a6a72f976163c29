"""Where built plans and timing caches live between processes.

* Plans go to core's :class:`~edgecore.cache.ArtifactCache` (atomic, checksummed, LRU-capped) under
  a :class:`~edgecore.cache.CacheKey` made of the SHA-256 of the model bytes (external data loaded
  in, so included), the TensorRT version, the GPU's name and compute capability, the CUDA runtime
  and driver versions, and the full build configuration (profiles included). A plan that TensorRT
  cannot deserialize (another TensorRT build, a damaged file) is dropped and rebuilt.
* The timing cache is one file per SM (compute capability) and TensorRT major version, shared by
  every build there. Builds read it, and merge what they learned back under an exclusive file lock
  (read, combine, write to a temporary name, rename), as Polygraphy does, so concurrent builders
  never lose each other's timings.

Concurrency: the file lock covers processes; ``_local_locks`` covers threads of this process (POSIX
``flock`` locks are per open file, so two threads would otherwise both hold one).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import attrs

from edgecore.cache import CacheKey, default_cache_dir

__all__ = ["GpuFacts", "plan_key", "TimingCacheFile", "file_lock", "default_root"]


@attrs.frozen(kw_only=True)
class GpuFacts:
    """The GPU and CUDA stack a plan is built for."""

    name: str
    compute_capability: str  # "9.0"
    cuda_runtime: str  # "12.8"
    driver: str  # CUDA driver API version, "12.9"

    @property
    def sm(self) -> str:
        return "sm" + self.compute_capability.replace(".", "")

    def describe(self) -> str:
        return f"{self.name} ({self.sm}, CUDA runtime {self.cuda_runtime}, driver {self.driver})"


def default_root() -> Path:
    """``<edgecore cache>/tensorrt`` beside the artifact cache (plans go in the artifact cache)."""
    return default_cache_dir().parent / "tensorrt"


def plan_key(model_sha256: str, trt_version: str, gpu: GpuFacts, build_config: Mapping[str, Any]) -> CacheKey:
    """The cache key of a plan: model, TensorRT version, GPU, CUDA stack and build configuration."""
    return CacheKey(
        model=model_sha256,
        backend="tensorrt",
        runtime=f"tensorrt {trt_version}",
        device=f"{gpu.name} {gpu.sm} cuda {gpu.cuda_runtime} driver {gpu.driver}",
        precision="graph",
        options=dict(build_config),
    )


_local_locks: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if absent) across threads and processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _local_guard:
        local = _local_locks.setdefault(str(path.resolve()), threading.Lock())
    with local, open(path, "a+b") as handle:
        if os.name == "nt":  # pragma: no cover - Windows
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


@attrs.frozen
class TimingCacheFile:
    """One timing cache file (per SM and TensorRT major) and its lock file beside it."""

    path: Path

    @classmethod
    def for_gpu(cls, root: Path, gpu: GpuFacts, trt_major: int) -> TimingCacheFile:
        return cls(root / f"timing-{gpu.sm}-trt{trt_major}.cache")

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def read(self) -> bytes:
        """The cache as stored (empty when there is none yet)."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""

    def merge(self, learned: bytes, combine: Callable[[bytes, bytes], bytes]) -> bytes:
        """Under the lock: combine what is on disk now with ``learned`` and store the result.

        ``combine(on_disk, learned)`` returns the merged serialized cache (TensorRT's
        ``ITimingCache.combine`` in the backend); it is not called when the file is empty.
        """
        with file_lock(self.lock_path):
            current = self.read()
            merged = combine(current, learned) if current else learned
            _atomic_write(self.path, merged)
            return merged
