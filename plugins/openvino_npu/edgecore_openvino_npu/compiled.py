"""A graph compiled by OpenVINO, run from many threads, outputs written into pooled buffers.

Threads and requests: every thread that calls :meth:`OpenVinoCompiledModel.run` gets its own
``InferRequest`` (created on first use, kept in a ``threading.local``), so concurrent callers -- the
scheduler's ``instances`` among them -- run in parallel on OpenVINO's streams (``NUM_STREAMS``;
``performance_hint="throughput"`` makes several). The compiled model, the output-shape memo and the
bucket table are shared; the memo and the table take ``_lock`` only when they grow, and swapping in a
freshly compiled model (after a run that outlived its deadline, see :mod:`.deadlines`) takes it too:
each thread's requests carry the generation they were made for and are remade when it changes.

Memory: inputs are wrapped, not copied (``ov.Tensor(array, shared_memory=True)``; read-only and
non-contiguous arrays are copied first, see :mod:`.binding`). Outputs go into
buffers from the engine's :class:`~edgecore.memory.MemoryPool` bound with ``set_output_tensor``.
The first request of an input-shape signature runs on a separate per-thread request whose outputs
OpenVINO allocates (this tells us the output shapes) and they are copied into pool buffers; every
later request of that signature binds pool buffers, so steady-state inference allocates no output
memory. Outputs sized by the data rather than the input shapes (NonZero, Unique, TopK with K an
input) always take that copying path once seen. Every buffer handed back comes from the pool, so the
engine's memory budget counts it; its block returns to the pool when the caller drops it.

Deadlines: ``deadline_ns`` reaches :func:`.deadlines.infer`, which cancels the run through
``InferRequest.cancel()`` and answers :class:`~edgecore.errors.RequestTimeoutError`.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import attrs
import numpy as np

from edgecore.backend import CompiledModel
from edgecore.errors import BackendExecutionError, EdgecoreError, EngineClosedError, InvalidInputError, ModelLoadError
from edgecore.memory import MemoryPool
from edgecore.profiling import register_stage

from edgecore_openvino_npu import _ov, binding, deadlines
from edgecore_openvino_npu.buckets import BucketPlan, Key

if TYPE_CHECKING:
    from edgecore.graph import Graph

logger = logging.getLogger(__name__)

__all__ = ["OpenVinoCompiledModel", "OpTiming"]

_SHAPE_MEMO = 64  # input-shape signatures whose output shapes are remembered
_MAX_RUNAWAYS = 2  # runs going on past their deadline, per compiled model, before requests are refused
_owners = itertools.count(1)  # keys of executables in deadlines.keep

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
    """One ``ov.CompiledModel`` with per-thread infer requests and the output-shape memo.

    ``rebuild`` compiles the same model again: after a run OpenVINO could not stop (see
    :mod:`.deadlines`) holds the compiled model's stream, a fresh one takes its place.
    """

    def __init__(
        self,
        compiled: Any,
        in_names: Sequence[str],
        out_names: Sequence[str],
        pool: MemoryPool | None,
        rebuild: Callable[[], Any] | None = None,
    ) -> None:
        self._in_names, self._out_names = tuple(in_names), tuple(out_names)
        self._runtime = _ov.runtime()
        self._tensor = self._runtime.Tensor
        self._pool = pool
        self._rebuild = rebuild
        self._owner = next(_owners)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._generation = 0
        self._refusing = False  # runs that outlived their deadline hold every compiled model we may make
        self._install(compiled)

    def _install(self, compiled: Any) -> None:
        ports = [compiled.outputs[i] for i in (_port_index(compiled.outputs, n) for n in self._out_names)]
        out_static = [p.get_partial_shape().is_static for p in ports]
        in_static = all(p.get_partial_shape().is_static for p in compiled.inputs)
        self.compiled = compiled
        self._in_index = binding.match_inputs(compiled.inputs, self._in_names)
        self._out_index = tuple(_port_index(compiled.outputs, name) for name in self._out_names)
        self._out_dtypes = tuple(binding.numpy_dtype(p.get_element_type()) for p in ports)
        # Outputs that are an input's own tensor: never bound (see binding), copied from the input.
        self._passthrough = binding.passthrough_outputs(compiled.inputs, self._in_index, compiled.outputs,
                                                        self._out_index)
        self._static_shapes = tuple(tuple(p.get_shape()) for p in ports) if all(out_static) else None
        self._dynamic_out = tuple(n for n, static in enumerate(out_static) if not static and n not in self._passthrough)
        # With static inputs, an output OpenVINO cannot size is sized by the data (NonZero, Unique, TopK
        # with K an input): it never goes into a buffer sized in advance. With dynamic inputs this is
        # found out at run time (a produced shape that differs from the memo's).
        self._data_dependent = in_static and bool(self._dynamic_out)
        self._shapes: dict[tuple, tuple[tuple[int, ...], ...]] = {}
        self._generation += 1

    def _request(self, attr: str) -> Any:
        local = self._local.__dict__
        if local.get("generation") != self._generation:  # first use, or a fresh compiled model
            local.clear()
            local["generation"] = self._generation
        request = local.get(attr)
        if request is None:
            request = local[attr] = self.compiled.create_infer_request()
        return request

    def last_request(self) -> Any | None:
        """The request this thread ran last (for its profiling info), or None."""
        return getattr(self._local, "last", None)

    def infer(
        self, arrays: Sequence[np.ndarray], out: Sequence[np.ndarray | None] | None = None, deadline_ns: int = 0
    ) -> list[np.ndarray]:
        if self._refusing:
            self._check_runaways()
        if self._data_dependent:
            return self._run_allocating(arrays, out, deadline_ns)
        shapes = self._static_shapes or self._shapes.get(tuple([a.shape for a in arrays]))
        if shapes is None:
            return self._run_allocating(arrays, out, deadline_ns, learn=True)
        request = self._request("main")
        inputs = self._bind_inputs(request, arrays)
        pool = self._pool
        wrap, tensor, runtime = binding.wrap, self._tensor, self._runtime
        set_output = request.set_output_tensor
        results = []
        for n, (index, dtype, shape) in enumerate(zip(self._out_index, self._out_dtypes, shapes)):
            buffer = out[n] if out is not None else None
            if buffer is None:
                buffer = pool.acquire(shape, dtype) if pool is not None else np.empty(shape, dtype)
            elif buffer.shape != shape:
                if n in self._dynamic_out:  # the memo may be wrong for an output sized by the data
                    return self._run_allocating(arrays, out, deadline_ns)
                raise InvalidInputError(
                    f"out buffer {self._out_names[n]!r} has shape {list(buffer.shape)}, the output has {list(shape)}"
                )
            if n not in self._passthrough:
                set_output(index, wrap(tensor, runtime, buffer))
            results.append(buffer)
        try:
            self._infer(request, deadline_ns, inputs, results)
        except EdgecoreError:
            raise
        except RuntimeError:
            if not self._dynamic_out:
                raise
            # An output sized by the data may have outgrown the buffer sized from an earlier request
            # (OpenVINO cannot grow caller memory): run again on OpenVINO's own buffers. A genuine
            # failure fails there too and propagates.
            results = self._run_allocating(arrays, out, deadline_ns)
            self._note_shapes(shapes, [r.shape for r in results])
            return results
        self._local.last = request
        for n, m in self._passthrough.items():
            np.copyto(results[n], arrays[m], casting="unsafe")
        for n in self._dynamic_out:
            produced = tuple(request.get_output_tensor(self._out_index[n]).shape)
            if produced != shapes[n]:  # OpenVINO wrote a smaller output into the buffer and said so
                self._note_shapes(shapes, [produced if m == n else shapes[m] for m in range(len(shapes))])
                results[n] = self._copy_out(request, n, out, arrays)
        return results

    def _bind_inputs(self, request: Any, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Set ``arrays`` as ``request``'s inputs (shared, or copied where OpenVINO cannot share them);
        return what was bound, which must live until the run ends."""
        inputs = [binding.bindable(a) for a in arrays]
        wrap, tensor, runtime = binding.wrap, self._tensor, self._runtime
        set_input = request.set_input_tensor
        for index, array in zip(self._in_index, inputs):
            if index is not None:  # None: an input no node reads, which OpenVINO dropped
                set_input(index, wrap(tensor, runtime, array))
        return inputs

    def _run_allocating(
        self,
        arrays: Sequence[np.ndarray],
        out: Sequence[np.ndarray | None] | None,
        deadline_ns: int,
        learn: bool = False,
    ) -> list[np.ndarray]:
        """A run on a per-thread request whose outputs OpenVINO allocates, copied into pool buffers.

        For the first request of an input-shape signature (``learn``: remember its output shapes)
        and for models whose outputs are sized by the data.
        """
        request = self._request("probe")
        inputs = self._bind_inputs(request, arrays)
        self._infer(request, deadline_ns, inputs)
        self._local.last = request
        results = [self._copy_out(request, n, out, arrays) for n in range(len(self._out_index))]
        if learn:
            with self._lock:
                if len(self._shapes) >= _SHAPE_MEMO:
                    self._shapes.pop(next(iter(self._shapes)))
                self._shapes[tuple(a.shape for a in arrays)] = tuple(r.shape for r in results)
        return results

    def _copy_out(
        self, request: Any, n: int, out: Sequence[np.ndarray | None] | None, arrays: Sequence[np.ndarray]
    ) -> np.ndarray:
        """Output ``n`` of ``request``'s last run, copied into the caller's buffer or a pool buffer."""
        if n in self._passthrough:
            data = arrays[self._passthrough[n]]
        else:
            data = binding.output_view(request.get_output_tensor(self._out_index[n]).data, self._out_dtypes[n])
        buffer = out[n] if out is not None else None
        if buffer is None:
            dtype = self._out_dtypes[n]
            buffer = self._pool.acquire(data.shape, dtype) if self._pool is not None else np.empty(data.shape, dtype)
        elif buffer.shape != data.shape:
            raise InvalidInputError(
                f"out buffer {self._out_names[n]!r} has shape {list(buffer.shape)}, the output has {list(data.shape)}"
            )
        np.copyto(buffer, data, casting="unsafe")
        return buffer

    def _note_shapes(self, expected: Sequence[tuple[int, ...]], produced: Sequence[tuple[int, ...]]) -> None:
        changed = [self._out_names[n] for n, (a, b) in enumerate(zip(expected, produced)) if tuple(a) != tuple(b)]
        if changed and not self._data_dependent:
            self._data_dependent = True
            logger.info(
                "openvino: outputs %s are sized by the input data, not only its shape; they are copied out of "
                "OpenVINO's buffers from now on", changed,
            )

    # -- deadlines ---------------------------------------------------------------------------------

    def _infer(self, request: Any, deadline_ns: int, *bound: Any) -> None:
        try:
            deadlines.infer(request, deadline_ns)
        except deadlines.RunawayError:
            self._abandon(request, bound)
            raise

    def _abandon(self, request: Any, bound: tuple) -> None:
        """``request`` runs on past its deadline: hold it, and compile afresh for the next requests."""
        deadlines.keep(self._owner, request, self.compiled, *bound)
        generation = self._local.__dict__.get("generation")
        self._local.__dict__.clear()
        with self._lock:
            if generation != self._generation:
                return  # another thread swapped a fresh compiled model in already
            running = deadlines.running(self._owner)
            if self._rebuild is None or running > _MAX_RUNAWAYS:
                self._refusing = True
                return
            started = time.perf_counter()
            try:
                compiled = self._rebuild()
            except Exception:
                logger.exception("openvino: compiling afresh after a run that outlived its deadline failed")
                self._refusing = True
                return
            self._install(compiled)
        logger.warning(
            "openvino: a run outlived its deadline and could not be stopped (%d such runs go on); compiled the "
            "model afresh in %.0f ms for the next requests", running, (time.perf_counter() - started) * 1e3,
        )

    def _check_runaways(self) -> None:
        running = deadlines.running(self._owner)
        if not running:
            self._refusing = False
            return
        raise BackendExecutionError(
            f"openvino: {running} runs of this model passed their deadlines inside operators OpenVINO cannot "
            f"interrupt (Loop and other control flow) and still run, each holding a core; requests are refused "
            f"until they end. Reload the model, or use backend 'cpu_simd', whose deadlines stop Loop bodies",
            backend="openvino",
        )


def _port_index(ports: Sequence[Any], name: str) -> int:
    for i, port in enumerate(ports):
        if name in port.get_names():
            return i
    known = [sorted(p.get_names()) for p in ports]
    raise ModelLoadError(f"OpenVINO's compiled model has no port named {name!r}; its ports: {known}")


def _plain(value: Any) -> Any:
    """A property value as JSON-ready data (``ov.Type`` -> "f32", lists of names -> list of str)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    to_string = getattr(value, "to_string", None)
    return to_string() if callable(to_string) else str(value)


def _copy_into(buffer: np.ndarray, value: np.ndarray, name: str) -> None:
    if buffer.shape != value.shape:
        raise InvalidInputError(f"out buffer {name!r} has shape {list(buffer.shape)}, the output has {list(value.shape)}")
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
        self._weights = graph.weight_bytes

    # -- running -----------------------------------------------------------------------------------

    def _run(
        self, feeds: dict[str, np.ndarray], out: Mapping[str, np.ndarray] | None, deadline_ns: int = 0
    ) -> dict[str, np.ndarray]:
        # Core checked feeds and ``out`` (names, dtypes, layout, fixed dims); what only the run knows,
        # an ``out`` buffer's shape against the produced output, is checked here.
        if self._closed:
            raise EngineClosedError(f"the OpenVINO model {self.name!r} is closed")
        arrays = [feeds[name] for name in self._in_names]
        outs = [out.get(name) for name in self._out_names] if out else None
        started = time.perf_counter_ns() if self._profile else 0
        if self._plan is None:
            results = self._exe.infer(arrays, outs, deadline_ns)
        else:
            results = self._run_bucket(arrays, outs, deadline_ns)
        if self._profile:
            self._record_profile(started, time.perf_counter_ns())
        return dict(zip(self._out_names, results))

    def _run_bucket(
        self, arrays: list[np.ndarray], outs: list[np.ndarray | None] | None, deadline_ns: int
    ) -> list[np.ndarray]:
        key, actual = self._plan.key(arrays)
        exe = self._buckets.get(key) or self._compile_bucket(key)
        padded = self._plan.pad(arrays, key, self._pool)
        results = self._plan.unpad(exe.infer(padded, None, deadline_ns), actual, key, self._pool)
        if outs is not None:
            for n, buffer in enumerate(outs):
                if buffer is not None:
                    _copy_into(buffer, results[n], self._out_names[n])
                    results[n] = buffer
        return results

    def _compile_bucket(self, key: Key) -> Executable:
        with self._lock:
            exe = self._buckets.get(key)
            if exe is None:
                shapes = self._plan.input_shapes(key)
                started = time.perf_counter()
                compiled = self._build(shapes)
                exe = Executable(compiled, self._in_names, self._out_names, self._pool,
                                 rebuild=lambda: self._build(shapes))
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
