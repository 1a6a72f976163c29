"""A graph compiled by OpenVINO, run from many threads, outputs written into pooled buffers.

Threads and requests: every thread that calls :meth:`OpenVinoCompiledModel.run` gets its own
``InferRequest`` (created on first use, kept in a ``threading.local``), so concurrent callers -- the
scheduler's ``instances`` among them -- run in parallel on OpenVINO's streams (``NUM_STREAMS``;
``performance_hint="throughput"`` makes several). The compiled model, the output-shape memo and the
bucket table are shared; the memo and the table take ``_lock`` only when they grow.

Memory: inputs are wrapped, not copied (``ov.Tensor(array, shared_memory=True)``). Outputs go into
buffers from the engine's :class:`~edgecore.memory.MemoryPool` bound with ``set_output_tensor``.
The first request of an input-shape signature runs on a separate per-thread *probe* request that
OpenVINO allocates for (this tells us the output shapes); every later request of that signature
binds pool buffers, so steady-state inference allocates no output memory. The arrays handed back are
the caller's; their blocks return to the pool when the caller drops them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import attrs
import numpy as np

from edgecore.backend import CompiledModel
from edgecore.errors import EngineClosedError, InvalidInputError
from edgecore.graph import Graph
from edgecore.memory import MemoryPool
from edgecore.profiling import register_stage

from edgecore_openvino_npu import _ov
from edgecore_openvino_npu.buckets import BucketPlan, Key

logger = logging.getLogger(__name__)

__all__ = ["OpenVinoCompiledModel", "OpTiming"]

_SHAPE_MEMO = 64  # input-shape signatures whose output shapes are remembered

#: The runtime's own run inside ``backend_execute`` (what onnxruntime's profile calls ``model_run``):
#: category "backend" puts it in the trace viewer's backend execution summary.
INFER_SPAN = "openvino_infer"
register_stage(INFER_SPAN, "backend")


@attrs.frozen(kw_only=True)
class OpTiming:
    """One operator of the last run, as OpenVINO's profiling info (``PERF_COUNT``) reports it."""

    name: str
    op_type: str
    exec_type: str
    status: str
    real_time_us: float
    cpu_time_us: float


class Executable:
    """One ``ov.CompiledModel`` with per-thread infer requests and the output-shape memo."""

    def __init__(
        self, compiled: Any, in_names: Sequence[str], out_names: Sequence[str], pool: MemoryPool | None
    ) -> None:
        self.compiled = compiled
        self._tensor = _ov.runtime().Tensor
        self._in_index = tuple(_port_index(compiled.inputs, name) for name in in_names)
        self._out_index = tuple(_port_index(compiled.outputs, name) for name in out_names)
        ports = [compiled.outputs[i] for i in self._out_index]
        self._out_dtypes = tuple(np.dtype(p.get_element_type().to_dtype()) for p in ports)
        static = all(p.get_partial_shape().is_static for p in ports)
        self._static_shapes = tuple(tuple(p.get_shape()) for p in ports) if static else None
        self._shapes: dict[tuple, tuple[tuple[int, ...], ...]] = {}
        self._pool = pool
        self._local = threading.local()
        self._lock = threading.Lock()

    def _request(self, attr: str) -> Any:
        request = getattr(self._local, attr, None)
        if request is None:
            request = self.compiled.create_infer_request()
            setattr(self._local, attr, request)
        return request

    def last_request(self) -> Any | None:
        """The request this thread ran last (for its profiling info), or None."""
        return getattr(self._local, "last", None)

    def infer(self, arrays: Sequence[np.ndarray], out: Sequence[np.ndarray | None] | None = None) -> list[np.ndarray]:
        shapes = self._static_shapes or self._shapes.get(tuple([a.shape for a in arrays]))
        if shapes is None:
            return self._probe(arrays, out)
        request = self._local.__dict__.get("main") or self._request("main")
        tensor = self._tensor
        set_input, set_output = request.set_input_tensor, request.set_output_tensor
        for index, array in zip(self._in_index, arrays):
            set_input(index, tensor(array if array.flags.c_contiguous else np.ascontiguousarray(array), shared_memory=True))
        pool = self._pool
        results = []
        for n, (index, dtype, shape) in enumerate(zip(self._out_index, self._out_dtypes, shapes)):
            buffer = out[n] if out is not None else None
            if buffer is None:
                buffer = pool.acquire(shape, dtype) if pool is not None else np.empty(shape, dtype)
            elif buffer.shape != shape:
                raise InvalidInputError(f"out buffer {n} has shape {list(buffer.shape)}, the output has {list(shape)}")
            set_output(index, tensor(buffer, shared_memory=True))
            results.append(buffer)
        request.infer()
        self._local.last = request
        return results

    def _probe(self, arrays: Sequence[np.ndarray], out: Sequence[np.ndarray | None] | None) -> list[np.ndarray]:
        """First request of a shape signature: OpenVINO allocates, and we learn the output shapes."""
        request = self._request("probe")
        for index, array in zip(self._in_index, arrays):
            request.set_input_tensor(index, self._tensor(np.ascontiguousarray(array), shared_memory=True))
        request.infer()
        self._local.last = request
        results = [np.array(request.get_output_tensor(i).data, copy=True) for i in self._out_index]
        with self._lock:
            if len(self._shapes) >= _SHAPE_MEMO:
                self._shapes.pop(next(iter(self._shapes)))
            self._shapes[tuple(a.shape for a in arrays)] = tuple(r.shape for r in results)
        if out is not None:
            for n, buffer in enumerate(out):
                if buffer is not None:
                    _copy_into(buffer, results[n], n)
                    results[n] = buffer
        return results


def _port_index(ports: Sequence[Any], name: str) -> int:
    for i, port in enumerate(ports):
        if name in port.get_names():
            return i
    known = [sorted(p.get_names()) for p in ports]
    raise InvalidInputError(f"OpenVINO's compiled model has no port named {name!r}; its ports: {known}")


def _plain(value: Any) -> Any:
    """A property value as JSON-ready data (``ov.Type`` -> "f32", lists of names -> list of str)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    to_string = getattr(value, "to_string", None)
    return to_string() if callable(to_string) else str(value)


def _copy_into(buffer: np.ndarray, value: np.ndarray, n: int) -> None:
    if buffer.shape != value.shape:
        raise InvalidInputError(f"out buffer {n} has shape {list(buffer.shape)}, the output has {list(value.shape)}")
    np.copyto(buffer, value)


class OpenVinoCompiledModel(CompiledModel):
    """A graph compiled for one OpenVINO device: dynamic, or as static-shape buckets."""

    backend = "openvino"

    def __init__(
        self,
        graph: Graph,
        *,
        device: str,
        pool: MemoryPool | None,
        executable: Executable | None = None,
        plan: BucketPlan | None = None,
        build: Callable[[list[tuple[int, ...]]], Any] | None = None,
        profile: bool = False,
    ) -> None:
        self.inputs = graph.inputs
        self.outputs = graph.outputs
        self.name = graph.name
        self.device = device
        self._in_names = tuple(s.name for s in self.inputs)
        self._out_names = tuple(s.name for s in self.outputs)
        self._pool = pool
        self._exe = executable
        self._plan = plan
        self._build = build
        self._buckets: dict[Key, Executable] = {}
        self._lock = threading.Lock()
        self._profile = profile
        self._closed = False
        self._weights = sum(
            v.const_value.nbytes for v in graph.model.graph.initializers.values() if v.const_value is not None
        )

    # -- running -----------------------------------------------------------------------------------

    def _run(self, feeds: dict[str, np.ndarray], out: Mapping[str, np.ndarray] | None, deadline_ns: int = 0) -> dict[str, np.ndarray]:
        if self._closed:
            raise EngineClosedError(f"the OpenVINO model {self.name!r} is closed")
        arrays = [feeds[name] for name in self._in_names]
        outs = self._out_list(out) if out is not None else None
        started = time.perf_counter_ns() if self._profile else 0
        try:
            if self._plan is None:
                results = self._exe.infer(arrays, outs)
            else:
                results = self._run_bucket(arrays, outs)
        except RuntimeError as exc:
            shapes = {name: list(a.shape) for name, a in zip(self._in_names, arrays)}
            raise InvalidInputError(f"OpenVINO could not run {self.name!r} on inputs {shapes}: {exc}") from exc
        if self._profile:
            self._record_profile(started, time.perf_counter_ns())
        return dict(zip(self._out_names, results))

    def _run_bucket(self, arrays: list[np.ndarray], outs: list[np.ndarray | None] | None) -> list[np.ndarray]:
        key, actual = self._plan.key(arrays)
        exe = self._buckets.get(key) or self._compile_bucket(key)
        padded = self._plan.pad(arrays, key, self._pool)
        results = self._plan.unpad(exe.infer(padded), actual, key, self._pool)
        if outs is not None:
            for n, buffer in enumerate(outs):
                if buffer is not None:
                    _copy_into(buffer, results[n], n)
                    results[n] = buffer
        return results

    def _compile_bucket(self, key: Key) -> Executable:
        with self._lock:
            exe = self._buckets.get(key)
            if exe is None:
                shapes = self._plan.input_shapes(key)
                started = time.perf_counter()
                compiled = self._build(shapes)
                exe = Executable(compiled, self._in_names, self._out_names, self._pool)
                self._buckets[key] = exe
                logger.info(
                    "openvino: compiled %s bucket %s for %s in %.0f ms",
                    self.name, dict(zip(self._plan.dims, key)), self.device, (time.perf_counter() - started) * 1e3,
                )
        return exe

    def prepare_buckets(self, keys: Sequence[Key] | None = None) -> int:
        """Compile bucket models ahead of the first requests (all of them by default); return how many."""
        if self._plan is None:
            return 0
        todo = list(keys) if keys is not None else self._plan.all_keys()
        for key in todo:
            if key not in self._buckets:
                self._compile_bucket(tuple(key))
        return len(todo)

    def _out_list(self, out: Mapping[str, np.ndarray]) -> list[np.ndarray | None]:
        unknown = set(out) - set(self._out_names)
        if unknown:
            raise InvalidInputError(f"out names {sorted(unknown)} are not outputs; outputs: {list(self._out_names)}")
        buffers = [out.get(name) for name in self._out_names]
        for name, buffer, spec in zip(self._out_names, buffers, self.outputs):
            if buffer is None:
                continue
            if buffer.dtype != spec.dtype.numpy or not buffer.flags.c_contiguous or not buffer.flags.writeable:
                raise InvalidInputError(
                    f"out buffer {name!r} must be a writeable C-contiguous {spec.dtype.numpy} array, got "
                    f"{buffer.dtype} (contiguous={buffer.flags.c_contiguous}, writeable={buffer.flags.writeable})"
                )
        return buffers

    # -- profiling ---------------------------------------------------------------------------------

    def profiling_info(self) -> list[OpTiming]:
        """Per-operator timings of this thread's last run (empty unless compiled with ``profile_ops``)."""
        executables = [self._exe] if self._plan is None else list(self._buckets.values())
        request = next((e.last_request() for e in executables if e is not None and e.last_request()), None)
        if request is None or not self._profile:
            return []
        return [
            OpTiming(
                name=info.node_name,
                op_type=info.node_type,
                exec_type=info.exec_type,
                status=str(info.status).rsplit(".", 1)[-1],
                real_time_us=info.real_time.total_seconds() * 1e6,
                cpu_time_us=info.cpu_time.total_seconds() * 1e6,
            )
            for info in request.profiling_info
        ]

    def _record_profile(self, start_ns: int, end_ns: int) -> None:
        from edgecore.profiling import get_profiler
        from edgecore.profiling.merge import Window, layout_sequential

        profiler = get_profiler()
        if not profiler.active:
            return
        args = {"backend": "openvino", "device": self.device, "model": self.name}
        ops = [(t.name, t.op_type, t.real_time_us) for t in self.profiling_info() if t.status == "EXECUTED"]
        profiler.record(INFER_SPAN, start_ns, end_ns, args=args)
        profiler.add_events(layout_sequential(ops, Window(start_ns, end_ns, args=args), backend="openvino",
                                              runtime="openvino"))

    # -- facts and life ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Effective OpenVINO settings of the compiled model(s): devices, precision, streams, cache."""
        executables = [self._exe] if self._plan is None else list(self._buckets.values())
        facts: dict[str, Any] = {"device": self.device, "buckets": len(self._buckets) if self._plan else None}
        if executables and executables[0] is not None:
            compiled = executables[0].compiled
            for key in ("EXECUTION_DEVICES", "INFERENCE_PRECISION_HINT", "NUM_STREAMS", "PERFORMANCE_HINT",
                        "OPTIMAL_NUMBER_OF_INFER_REQUESTS", "INFERENCE_NUM_THREADS", "LOADED_FROM_CACHE"):
                try:
                    value = compiled.get_property(key)
                except Exception:
                    continue
                facts[key.lower()] = _plain(value)
        return facts

    @property
    def optimal_instances(self) -> int:
        """OpenVINO's advice for parallel requests (``OPTIMAL_NUMBER_OF_INFER_REQUESTS``)."""
        return int(self.describe().get("optimal_number_of_infer_requests", 1))

    def memory_bytes(self) -> int:
        return self._weights

    def close(self) -> None:
        self._closed = True
        self._exe = None
        self._buckets = {}
