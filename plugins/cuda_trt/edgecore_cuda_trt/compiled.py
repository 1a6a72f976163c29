"""A deserialized TensorRT engine serving requests: buffers per input signature, one stream,
``execute_async_v3``, CUDA-graph replay, host or device outputs.

Per input signature (its shapes) the model keeps device buffers for every I/O tensor and pinned host
buffers for the host-side copies; after the first run of a signature its ``execute_async_v3`` is
captured as a CUDA graph (``cuda_graphs``) and later requests relaunch it. Inputs are numpy arrays
(copied through the pinned buffers) or CUDA tensors (torch, cupy, any DLPack producer: copied device
to device after the producer's stream is synchronised). Outputs are numpy arrays, or with
``output_device="device"`` :class:`~edgecore_cuda_trt.cuda.DeviceArray` blocks of the model's device
pool (``__cuda_array_interface__``: torch, CuPy and Numba take them without a copy) that the caller
owns until it drops them; the stream is synchronised before ``run`` returns either way.

Concurrency: one execution context and one stream serve the model, under ``_lock``; run several
engine ``instances`` for parallel streams.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Mapping

import numpy as np

from edgecore.backend import CompiledModel
from edgecore.errors import BackendExecutionError, InvalidInputError
from edgecore.graph import Graph
from edgecore.inputs import fill_out
from edgecore.memory import MemoryPool
from edgecore_cuda_trt.cuda import CudaAllocator, DeviceArray, GraphExec, PinnedBuffer, Stream, cudart
from edgecore_cuda_trt.options import TrtOptions
from edgecore_cuda_trt.profiles import Profile, profile_for

logger = logging.getLogger(__name__)

__all__ = ["TrtCompiledModel"]


def _device_pointer(value: Any) -> tuple[int, Any] | None:
    """(pointer, owner) of a CUDA tensor, or None for host data."""
    interface = getattr(value, "__cuda_array_interface__", None)
    if interface is not None:
        return int(interface["data"][0]), value
    if hasattr(value, "is_cuda") and getattr(value, "is_cuda"):
        return int(value.data_ptr()), value
    return None


class _Signature:
    __slots__ = ("shapes", "device", "pinned", "graph", "runs", "profile")

    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.device: dict[str, DeviceArray] = {}
        self.pinned: dict[str, PinnedBuffer] = {}
        self.graph: GraphExec | None = None
        self.runs = 0
        self.profile = 0


class TrtCompiledModel(CompiledModel):
    backend = "tensorrt"

    def __init__(
        self,
        trt: Any,
        engine: Any,
        graph: Graph,
        settings: TrtOptions,
        profiles: list[Profile],
        placement: list,
        max_memory_usage: int = 0,
    ) -> None:
        self.inputs, self.outputs = graph.inputs, graph.outputs
        self.settings = settings
        self.placement = placement
        self._trt = trt
        self._engine = engine
        self._context = engine.create_execution_context()
        if self._context is None:
            raise BackendExecutionError("tensorrt could not create an execution context (out of device memory?)", backend="tensorrt")
        self._stream = Stream()
        self._profiles = profiles
        # I/O buffers and device outputs: core's pool over device memory (size classes, reuse, budget)
        self.pool = MemoryPool(
            alignment=256, max_memory_usage=max_memory_usage, name=f"cuda:{settings.device_index}",
            allocator=CudaAllocator(settings.device_index),
        )
        self._names = tuple(spec.name for spec in graph.inputs)
        self._out_names = tuple(spec.name for spec in graph.outputs)
        self._dtypes = {
            name: np.dtype(trt.nptype(engine.get_tensor_dtype(name))) for name in (*self._names, *self._out_names)
        }
        self._signatures: collections.OrderedDict[tuple, _Signature] = collections.OrderedDict()
        self._current: tuple | None = None
        self._lock = threading.Lock()
        self._layer_times: list[tuple[str, float]] = []
        if settings.profile_ops:
            self._context.profiler = _layer_profiler(trt, self._layer_times)

    # -- feeds -------------------------------------------------------------------------------------

    def check(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """As core's check; CUDA tensors pass as they are (checked through zero-size stand-ins)."""
        if not isinstance(feeds, Mapping) or not any(_device_pointer(v) for v in feeds.values()):
            return super().check(feeds)
        device = {k: v for k, v in feeds.items() if _device_pointer(v)}
        stand_ins = {}
        for name, value in device.items():
            dtype = np.dtype(str(value.dtype).replace("torch.", ""))
            stand_ins[name] = np.broadcast_to(np.zeros((), dtype), tuple(value.shape))
        checked = super().check({**feeds, **stand_ins})
        checked.update(device)
        return checked

    # -- running -----------------------------------------------------------------------------------

    def _signature(self, shapes: dict[str, tuple[int, ...]]) -> _Signature:
        key = tuple(shapes.values())
        entry = self._signatures.get(key)
        if entry is not None:
            self._signatures.move_to_end(key)
            return entry
        entry = _Signature()
        if self._profiles:
            entry.profile = profile_for(self._profiles, shapes)
            if entry.profile < 0:
                raise InvalidInputError(
                    f"input shapes {shapes} are outside every optimization profile this engine was built with "
                    f"({self._profiles}); rebuild with wider 'profiles', 'dim_ranges' or 'max_batch_size'"
                )
        self._set_shapes(entry, shapes)  # for the output shapes; addresses come once buffers exist
        self._current = None
        for name in self._out_names:
            shape = tuple(self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendExecutionError(
                    f"output {name!r} has a data-dependent shape {shape}; the tensorrt plugin does not run such "
                    "engines yet (use the torch or cpu_simd backend)",
                    backend="tensorrt",
                )
            entry.shapes[name] = shape
        entry.shapes.update(shapes)
        for name, shape in entry.shapes.items():
            dtype = self._dtypes[name]
            entry.device[name] = self.pool.acquire(shape, dtype)
            entry.pinned[name] = PinnedBuffer(shape, dtype)
        self._signatures[key] = entry
        while len(self._signatures) > self.settings.max_signatures:
            dropped_key, _ = self._signatures.popitem(last=False)
            if dropped_key == self._current:
                self._current = None
        return entry

    def _set_shapes(self, entry: _Signature, shapes: dict[str, tuple[int, ...]]) -> None:
        context = self._context
        if len(self._profiles) > 1:
            context.set_optimization_profile_async(entry.profile, self._stream.handle)
        for name, shape in shapes.items():
            if not context.set_input_shape(name, shape):
                raise InvalidInputError(f"tensorrt refused shape {list(shape)} for input {name!r}")

    def _select(self, key: tuple, entry: _Signature, shapes: dict[str, tuple[int, ...]]) -> None:
        """Point the context at this signature: profile, input shapes, tensor addresses."""
        if self._current == key:
            return
        self._set_shapes(entry, shapes)
        for name, buffer in entry.device.items():
            self._context.set_tensor_address(name, buffer.ptr)
        self._current = key

    def _run(self, feeds: dict[str, Any], out: Mapping[str, np.ndarray] | None, deadline_ns: int) -> dict[str, Any]:
        shapes = {name: tuple(feeds[name].shape) for name in self._names}
        with self._lock:
            entry = self._signature(shapes)
            self._select(tuple(shapes.values()), entry, shapes)
            stream = self._stream
            for name in self._names:
                value = feeds[name]
                device = _device_pointer(value)
                nbytes = entry.device[name].nbytes if np.prod(shapes[name]) else 0
                if device is not None:
                    _sync_producer(value)
                    if nbytes:
                        stream.copy_on_device(entry.device[name].ptr, device[0], nbytes)
                elif nbytes:
                    np.copyto(entry.pinned[name].array, value)
                    stream.copy_to_device(entry.device[name].ptr, entry.pinned[name].ptr, nbytes)
            started = time.perf_counter_ns()
            self._execute(entry)
            result = self._collect(entry, out)
            if self.settings.profile_ops:
                self._report_layers(started)
            return result

    def _execute(self, entry: _Signature) -> None:
        entry.runs += 1
        if entry.graph is not None:
            entry.graph.launch()
            return
        if not self._context.execute_async_v3(self._stream.handle):
            raise BackendExecutionError("tensorrt execute_async_v3 failed (see TensorRT's log)", backend="tensorrt")
        if self.settings.cuda_graphs and not self.settings.profile_ops and entry.runs >= 2:
            try:  # enqueued once already, so the context's deferred shape work is done
                entry.graph = GraphExec(self._stream, lambda: self._context.execute_async_v3(self._stream.handle))
            except Exception as exc:
                self.settings = _without_graphs(self.settings)
                logger.warning("tensorrt: CUDA graph capture failed (%r); running without graphs", exc)

    def _collect(self, entry: _Signature, out: Mapping[str, np.ndarray] | None) -> dict[str, Any]:
        stream = self._stream
        if self.settings.output_device == "device" and out is None:
            result = {}
            for name in self._out_names:  # the caller's own block; back to the pool when dropped
                array = self.pool.acquire(entry.shapes[name], self._dtypes[name])
                if array.nbytes:
                    stream.copy_on_device(array.ptr, entry.device[name].ptr, array.nbytes)
                result[name] = array
            stream.synchronize()
            return result
        for name in self._out_names:
            if np.prod(entry.shapes[name]):
                stream.copy_to_host(entry.pinned[name].ptr, entry.device[name].ptr, entry.device[name].nbytes)
        stream.synchronize()
        result = {name: entry.pinned[name].array.copy() for name in self._out_names}
        return fill_out(result, out) if out else result

    # -- profiling ---------------------------------------------------------------------------------

    def _report_layers(self, started: int) -> None:
        from edgecore.profiling import get_profiler

        profiler = get_profiler()
        times, self._layer_times[:] = list(self._layer_times), []
        if not profiler.active:
            return
        at = started
        for layer, ms in times:  # TensorRT reports durations: laid end to end from the launch
            end = at + int(ms * 1e6)
            profiler.record(f"tensorrt/{layer}", at, end, args={"backend": "tensorrt", "layer": layer})
            at = end

    # -- facts -------------------------------------------------------------------------------------

    def memory_bytes(self) -> int:
        size = getattr(self._engine, "device_memory_size_v2", None) or getattr(self._engine, "device_memory_size", 0)
        return int(size) + self.pool.statistics().reserved_bytes

    def close(self) -> None:
        with self._lock:
            self._signatures.clear()
            self._current = None
            self._context = None
            self._engine = None


def _without_graphs(settings: TrtOptions) -> TrtOptions:
    import attrs

    return attrs.evolve(settings, cuda_graphs=False)


def _sync_producer(value: Any) -> None:
    """Wait for the stream that produced a CUDA tensor (torch's current stream; cupy's)."""
    if hasattr(value, "is_cuda"):
        import torch

        torch.cuda.current_stream(value.device).synchronize()
    else:
        cudart().cudaDeviceSynchronize()


def _layer_profiler(trt: Any, sink: list) -> Any:
    class LayerTimes(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            sink.append((layer_name, float(ms)))

    return LayerTimes()
