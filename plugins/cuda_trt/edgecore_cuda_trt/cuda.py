"""Device memory, pinned host memory, streams and CUDA graphs through cuda-python's runtime API
(``cuda.bindings.runtime``), the way NVIDIA's TensorRT samples do it since they dropped pycuda.

Every call's status is checked; a failure raises :class:`CudaError` naming the call and CUDA's
error name. Buffers free themselves when dropped (and on :meth:`free`).
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any, Callable

import numpy as np

from edgecore_cuda_trt.cache import GpuFacts

__all__ = [
    "CudaError", "cudart", "check", "DeviceBuffer", "PinnedBuffer", "Stream", "GraphExec", "gpu_facts", "device_count",
    "DeviceArray", "CudaAllocator",
]


class CudaError(RuntimeError):
    """A CUDA runtime call failed."""


@functools.cache
def cudart() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError:  # cuda-python before 12.6 named the module cuda.cudart
        from cuda import cudart as runtime  # type: ignore[no-redef]
    return runtime


def check(result: Any, what: str = "CUDA call") -> Any:
    """The value(s) of a cuda-python call after checking its status (the first element)."""
    rt = cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != rt.cudaError_t.cudaSuccess:
        name = rt.cudaGetErrorName(err)[1]
        name = name.decode() if isinstance(name, bytes) else str(name)
        raise CudaError(f"{what} failed: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def device_count() -> int:
    rt = cudart()
    err, count = rt.cudaGetDeviceCount()
    return int(count) if err == rt.cudaError_t.cudaSuccess else 0


def _version(number: int) -> str:
    return f"{number // 1000}.{(number % 1000) // 10}"


def gpu_facts(index: int) -> GpuFacts:
    rt = cudart()
    props = check(rt.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return GpuFacts(
        name=name.split("\x00", 1)[0].strip(),
        compute_capability=f"{props.major}.{props.minor}",
        cuda_runtime=_version(check(rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")),
        driver=_version(check(rt.cudaDriverGetVersion(), "cudaDriverGetVersion")),
    )


class DeviceBuffer:
    """``nbytes`` of device memory (cudaMalloc)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(check(cudart().cudaMalloc(self.nbytes), "cudaMalloc"))

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            check(cudart().cudaFree(ptr), "cudaFree")

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:  # at interpreter exit the runtime may be gone
            pass


class PinnedBuffer:
    """Page-locked host memory (cudaMallocHost) viewed as a numpy array of ``shape`` and ``dtype``."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape)
        count = int(np.prod(shape, dtype=np.int64))
        self.nbytes = max(count * self.dtype.itemsize, 1)
        self.ptr = int(check(cudart().cudaMallocHost(self.nbytes), "cudaMallocHost"))
        raw = (ctypes.c_ubyte * self.nbytes).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=self.dtype, count=count).reshape(self.shape)

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            self.array = None
            check(cudart().cudaFreeHost(ptr), "cudaFreeHost")

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:
            pass


class Stream:
    """A CUDA stream; ``handle`` is what ``execute_async_v3`` takes."""

    def __init__(self) -> None:
        self._stream = check(cudart().cudaStreamCreate(), "cudaStreamCreate")
        self.handle = int(self._stream)

    def copy_to_device(self, dst: int, src: int, nbytes: int) -> None:
        rt = cudart()
        check(rt.cudaMemcpyAsync(dst, src, nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream), "cudaMemcpyAsync H2D")

    def copy_to_host(self, dst: int, src: int, nbytes: int) -> None:
        rt = cudart()
        check(rt.cudaMemcpyAsync(dst, src, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream), "cudaMemcpyAsync D2H")

    def copy_on_device(self, dst: int, src: int, nbytes: int) -> None:
        rt = cudart()
        check(rt.cudaMemcpyAsync(dst, src, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, self._stream), "cudaMemcpyAsync D2D")

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def __del__(self) -> None:
        try:
            check(cudart().cudaStreamDestroy(self._stream), "cudaStreamDestroy")
        except Exception:
            pass


class GraphExec:
    """The work ``enqueue()`` puts on ``stream``, captured once as a CUDA graph and relaunched."""

    def __init__(self, stream: Stream, enqueue: Callable[[], Any]) -> None:
        rt = cudart()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(rt.cudaStreamBeginCapture(stream._stream, mode), "cudaStreamBeginCapture")
        try:
            ok = enqueue()
        finally:
            graph = check(rt.cudaStreamEndCapture(stream._stream), "cudaStreamEndCapture")
        if ok is False:
            check(rt.cudaGraphDestroy(graph), "cudaGraphDestroy")
            raise CudaError("the work to capture failed to enqueue")
        self._graph = graph
        self._exec = check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        self._stream = stream

    def launch(self) -> None:
        check(cudart().cudaGraphLaunch(self._exec, self._stream._stream), "cudaGraphLaunch")

    def __del__(self) -> None:
        rt = cudart()
        try:
            check(rt.cudaGraphExecDestroy(self._exec), "cudaGraphExecDestroy")
            check(rt.cudaGraphDestroy(self._graph), "cudaGraphDestroy")
        except Exception:
            pass


class DeviceArray:
    """A device tensor handed out by a :class:`~edgecore.memory.MemoryPool` over :class:`CudaAllocator`.

    It exposes ``__cuda_array_interface__`` (version 3), so ``torch.as_tensor(a, device="cuda")``,
    ``cupy.asarray(a)`` and Numba take it without a copy. Its block returns to the pool when the
    last reference goes (the pool's weak-reference lease), like the pool's host arrays.
    """

    __slots__ = ("ptr", "shape", "dtype", "device", "__weakref__")

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype, device: int) -> None:
        self.ptr, self.shape, self.dtype, self.device = ptr, tuple(shape), np.dtype(dtype), device

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 3, "strides": None, "stream": None}

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype}, device=cuda:{self.device})"


class CudaAllocator:
    """Device memory for :class:`edgecore.memory.MemoryPool` (its ``Allocator`` protocol): blocks from
    ``cudaMalloc`` on ``device``, handed out as :class:`DeviceArray`, freed when the pool trims them."""

    def __init__(self, device: int = 0) -> None:
        self.device = device

    def allocate(self, nbytes: int, alignment: int) -> tuple[DeviceBuffer, int]:
        buffer = DeviceBuffer(nbytes)  # cudaMalloc aligns to 256 bytes, past any pool alignment
        return buffer, buffer.ptr

    def wrap(self, block: DeviceBuffer, shape, dtype) -> DeviceArray:
        return DeviceArray(block.ptr, tuple(shape), np.dtype(dtype), self.device)

    def free(self, block: DeviceBuffer) -> None:
        block.free()
