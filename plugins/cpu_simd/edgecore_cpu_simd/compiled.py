"""How ``cpu_simd`` runs requests: :class:`OrtCompiledModel`, an ONNX Runtime session behind the
:class:`~edgecore.backend.CompiledModel` contract (``_run(feeds, out, deadline_ns)``).

* **Outputs into the pool.** Inputs and outputs go through an IOBinding (one per thread: bindings are
  not thread-safe). An output whose shape follows from the input shapes (see
  :mod:`edgecore_cpu_simd.binding`) is bound to a buffer taken from the engine's memory pool for
  this request, so ONNX Runtime writes it in place. The buffer is the caller's until the caller's
  array and every view of it are gone; then it returns to the pool (a weak-reference callback), so
  steady-state inference of static shapes allocates nothing. The budget is checked when the buffer
  is taken, before the run, also on the first request of a shape. Outputs whose shape depends on
  the data are allocated by ONNX Runtime and handed over without a copy, checked against the budget
  after the run. When ONNX Runtime refuses a shape the graph promised, the request runs again with
  every output allocated by the runtime, and the outputs that differed are allocated by the runtime
  from then on. A run that fails with outputs bound by shape therefore runs twice before its error
  is raised.
* **Plain runs for strings.** IOBinding cannot bind string tensors (string inputs are refused;
  reading string outputs crashes the process in ``copy_outputs_to_cpu``): a model with any string
  input or output runs through ``session.run``, whose outputs are copied into ``out`` when given.
* **Deadlines.** With a deadline the run gets its own ``RunOptions``; :func:`edgecore.watchdog.watch`
  sets ``terminate`` when the deadline passes and the request fails with ``RequestTimeoutError``.
  The session serves the next request normally.
* **Errors.** Runtime failures propagate as they are (core wraps them into
  ``BackendExecutionError``), except an ``out`` buffer whose shape does not fit the output
  (``InvalidInputError``) and a budgeted session's arena refusing memory (``MemoryBudgetExceeded``).

Concurrency: one ``InferenceSession`` serves every thread (ORT's ``run`` is thread-safe); each thread
keeps its own IOBinding, created on first use. The output plans (per input-shape signature) are
shared by all threads: a dict only ever added to, or replaced whole; ``_lock`` guards the set of
outputs the runtime allocates from now on.

Per-operator profiling (``CompileOptions.profile_ops``): the session is created with ORT's profiler
on (``SessionOptions.enable_profiling``, file prefix in the temp folder). ORT keeps every run's
kernel timings in memory and writes them only at ``end_profiling()``, after which that session
records no more. So the compiled model registers a flush hook with the process-wide profiler: when
an edgecore profiling session stops, the hook ends ORT's profile, merges it into the trace as child
spans of this backend's ``backend_execute`` spans (``model_run`` and one span per kernel, matched by
thread and time), deletes the file, and swaps in a fresh profiling ``InferenceSession`` built from
the same graph and options, so that the next profiling session gets per-op spans too. The swap costs
one session creation (tens to hundreds of ms, in ``stop_global_session``); it is skipped when no
``cpu_simd`` span was recorded. ``run`` is not changed by any of this: a thread that read the old
binding as the swap happened runs it on the new session (ORT runs a binding by its names and
values), and the previous sessions are kept alive (``_RETIRED``) so that such a binding never points
at a freed session. Between profiling sessions ORT keeps accumulating kernel events (about 100 per
run for a CNN): use ``profile_ops`` for profiling runs, not for serving.
"""

from __future__ import annotations

import collections
import logging
import operator
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from edgecore.backend import CompiledModel, CompileOptions
from edgecore.errors import EdgecoreError, MemoryBudgetExceeded, RequestTimeoutError
from edgecore.inputs import fill_out
from edgecore.tensor import DataType
from edgecore.watchdog import watch
from edgecore_cpu_simd.binding import copy_value, is_bridged, is_packed, output_rules, pack_4bit, shape_from
from edgecore_cpu_simd.session import arena_refused, budget, new_session, uses_env_allocators

if TYPE_CHECKING:
    from edgecore.graph import Graph

__all__ = ["OrtCompiledModel"]

logger = logging.getLogger(__name__)

_shape = operator.attrgetter("shape")
_BINDINGS = 4  # IOBindings per thread and model (see _new_bindings)
_PLANS = 256  # distinct input-shape signatures whose output plans are remembered
_RETIRED = 2  # sessions replaced by a profiling renewal, kept alive for bindings still in flight


class OrtCompiledModel(CompiledModel):
    """An ONNX Runtime session, per-thread IOBindings and per-request output buffers from the pool."""

    backend = "cpu_simd"

    def __init__(self, session: Any, graph: Graph, options: CompileOptions, model: str | bytes | None = None) -> None:
        """``model``: what ``session`` was created from (a path or bytes; default: the graph's
        :meth:`~edgecore.graph.Graph.runtime_model`), for the profiling renewals."""
        from onnxruntime.capi import _pybind_state as C

        self.session = session
        #: the artifact-cache entry's pin when ``session`` came from the cache (keeps it from being trimmed)
        self.cache_pin: Any = None
        #: what the session was created from: the cached optimized model's path, the graph's file, or bytes
        self.model_source = model if model is not None else graph.runtime_model(options.cache_dir)
        self.inputs = graph.inputs
        self.outputs = graph.outputs
        self._sess = session._sess
        self._run_options = C.RunOptions
        self._pool = options.memory_pool
        self._budget = budget(self._pool)
        self._arena = uses_env_allocators(session.get_session_options())
        self._request = self._pool.request if self._pool is not None else _request
        self._take = self._pool.take if self._pool is not None else _fresh
        self._cpu = C.OrtDevice(C.OrtDevice.cpu(), C.OrtDevice.default_memory(), 0)
        self._binding_type = C.SessionIOBinding
        self._out_names = tuple(spec.name for spec in self.outputs)
        self._out_list = list(self._out_names)
        # (name, ONNX element type, numpy dtype) per output, for binding
        self._outs = tuple((spec.name, int(spec.dtype), spec.dtype.numpy) for spec in self.outputs)
        self._indices = range(len(self._outs))
        self._plain = any(spec.dtype == DataType.STRING for spec in (*self.inputs, *self.outputs))
        self._by_address = not self._plain and not all(is_bridged(spec) for spec in self.inputs)
        self._copied_out = frozenset(i for i, spec in enumerate(self.outputs) if not is_bridged(spec))
        self._packed_out = frozenset(i for i, spec in enumerate(self.outputs) if is_packed(spec))
        self._rules = output_rules(graph)
        self._demoted: set[int] = set()  # outputs whose promised shape the runtime refused
        # input shapes -> (per output: a pool request, or None when the runtime allocates; those outputs)
        self._plans: dict[tuple, tuple[tuple, tuple[int, ...]]] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._weights_bytes = graph.weight_bytes
        self._op_profiling = bool(options.profile_ops) and session.get_session_options().enable_profiling
        if self._op_profiling:
            from edgecore.profiling import get_profiler

            self._model = self.model_source  # to build a fresh profiling session after each merge
            self._retired: collections.deque = collections.deque(maxlen=_RETIRED)
            self._profile_lock = threading.Lock()
            self._profile_closed = False
            # The profiler holds the hook, the hook holds this model weakly; a model dropped without
            # close() still unregisters and ends (and deletes) its profile, also at interpreter exit.
            self._profiling_now = [session]  # the session whose profile is open
            self._flush_hook = _weak_hook(self)
            get_profiler().add_flush_hook(self._flush_hook)
            self._profile_cleanup = weakref.finalize(self, _end_profile, self._flush_hook, self._profiling_now)

    # -- running a request ---------------------------------------------------------------------------

    def _run(
        self, feeds: dict[str, np.ndarray], out: Mapping[str, np.ndarray] | None, deadline_ns: int
    ) -> dict[str, np.ndarray]:
        try:
            if self._plain:
                return self._run_plain(feeds, out, deadline_ns)
            bindings = getattr(self._local, "bindings", None) or self._new_bindings()
            key = tuple(map(_shape, feeds.values()))
            plan = self._plans.get(key) or self._plan(key)
            requests, runtime = plan
            if out is not None:
                binding, bound = bindings[0]
                kept = self._bind_inputs(binding, feeds)  # noqa: F841 - alive until the run ends
                return self._run_into(binding, bound, plan, out, deadline_ns)
            arrays: list = []
            targets: list = []
            take = self._take
            for request in requests:
                if request is None:
                    arrays.append(None)
                    targets.append(None)
                else:
                    array, address = take(request)  # refuses past the budget, before the run
                    arrays.append(array)
                    targets.append((address, request))
            for state in bindings:  # a binding bound to these very buffers (a run loop gets them back)
                if state[1] == targets:
                    break
            else:  # the least recently bound one
                state = bindings.pop()
                bindings.insert(0, state)
            binding, bound = state
            kept = self._bind_inputs(binding, feeds)  # noqa: F841 - alive until the run ends
            bind, cpu = binding.bind_output, self._cpu
            for (name, element, _), target, index in zip(self._outs, targets, self._indices):
                if target is None:
                    bind(name, cpu)
                elif bound[index] != target:
                    bind(name, cpu, element, target[1][0], target[0])
                bound[index] = target
            try:
                if deadline_ns:
                    self._until(deadline_ns, self._sess.run_with_iobinding, binding)
                else:
                    self._sess.run_with_iobinding(binding, None)
            except EdgecoreError:
                raise
            except Exception:
                if len(runtime) == len(arrays):  # nothing was bound by shape: a real failure
                    raise
                return self._rerun(binding, bound, requests, deadline_ns)
            if runtime:
                self._collect(binding, bound, arrays, runtime)
            return dict(zip(self._out_names, arrays))
        except EdgecoreError:
            raise
        except Exception as exc:
            if self._arena and arena_refused(exc):
                raise MemoryBudgetExceeded(
                    f"cpu_simd: onnxruntime needed more working memory than max_memory_usage={self._budget} "
                    f"allows ({exc}); raise max_memory_usage or lower the batch size"
                ) from exc
            raise

    def _new_bindings(self) -> list[tuple[Any, list]]:
        """This thread's IOBindings, most recently bound first, each with the (address, request)
        each output is bound to (None: to the runtime's allocation). A run loop alternates between
        a few output buffers (the caller holds the last result while the next run takes a buffer):
        each keeps a binding bound to it, so buffers are not bound again on every run."""
        bindings = self._local.bindings = [
            (self._binding_type(self._sess), [None] * len(self._outs)) for _ in range(_BINDINGS)
        ]
        return bindings

    def _bind_inputs(self, binding: Any, feeds: dict[str, np.ndarray]) -> list | None:
        """Bind ``feeds``; returns what must stay alive until the run ends (copies, packed data)."""
        if self._by_address:
            return self._bind_by_address(binding, feeds)
        bind = binding.bind_input  # ORT wraps a C-contiguous aligned array (alive until we return), copies others
        for name, array in feeds.items():
            bind(name, array)
        return None

    def _bind_by_address(self, binding: Any, feeds: dict[str, np.ndarray]) -> list:
        """Inputs of types ONNX Runtime's numpy bridge lacks (bfloat16, float8, 4-bit), bound by
        address with their ONNX type; returns the arrays that must outlive the run."""
        kept = []
        for spec in self.inputs:
            array = np.ascontiguousarray(feeds[spec.name])
            if is_bridged(spec):
                binding.bind_input(spec.name, array)
                kept.append(array)
                continue
            data = pack_4bit(array) if is_packed(spec) else array
            kept.append(data)
            binding.bind_input(spec.name, self._cpu, int(spec.dtype), array.shape, data.ctypes.data)
        return kept

    def _plan(self, key: tuple) -> tuple[tuple, tuple[int, ...]]:
        """Pool requests for the outputs at these input shapes (None: the runtime allocates the
        output), and the indices of the outputs the runtime allocates."""
        requests = tuple(
            None if rule is None or index in self._demoted else self._request(shape_from(rule, key), dtype)
            for index, (rule, (_, _, dtype)) in enumerate(zip(self._rules, self._outs))
        )
        plan = requests, tuple(i for i, request in enumerate(requests) if request is None)
        if len(self._plans) >= _PLANS:
            self._plans = {}
        self._plans[key] = plan
        return plan

    def _collect(self, binding: Any, bound: list, arrays: list, runtime: Any) -> None:
        """Fill ``arrays`` at ``runtime`` with the outputs ONNX Runtime allocated (no copy, except
        for types the numpy bridge lacks) and check them against the budget."""
        values = binding.get_outputs()
        nbytes = 0
        for index in runtime:
            value = values[index]
            array = copy_value(value, self.outputs[index]) if index in self._copied_out else value.numpy()
            arrays[index] = array
            nbytes += array.nbytes
        binding.clear_binding_outputs()  # the binding no longer holds them: the caller's arrays do
        bound[:] = [None] * len(bound)
        if self._budget:
            self._pool.check_budget(nbytes, "outputs onnxruntime allocated")

    def _rerun(self, binding: Any, bound: list, requests: tuple, deadline_ns: int) -> dict[str, np.ndarray]:
        """The run failed with outputs bound by shape: run again with every output allocated by the
        runtime (a failure now is the model's own) and stop binding outputs whose promised shape
        was wrong."""
        bind, cpu = binding.bind_output, self._cpu
        bound[:] = [None] * len(bound)
        for name in self._out_names:
            bind(name, cpu)
        self._execute(binding, deadline_ns)
        arrays: list = [None] * len(self._out_names)
        self._collect(binding, bound, arrays, range(len(arrays)))
        wrong = {i for i, request in enumerate(requests) if request is not None and arrays[i].shape != request[0]}
        if wrong:
            logger.debug("cpu_simd: outputs %s have data-dependent shapes; onnxruntime allocates them from now on",
                         [self._out_names[i] for i in sorted(wrong)])  # fmt: skip
            with self._lock:
                self._demoted |= wrong
                self._plans = {}
        return dict(zip(self._out_names, arrays))

    def _run_into(
        self, binding: Any, bound: list, plan: tuple, out: Mapping[str, np.ndarray], deadline_ns: int
    ) -> dict[str, np.ndarray]:
        """A run writing into the caller's ``out`` buffers (checked by core: names, dtype, layout)."""
        requests, _ = plan
        bind, cpu = binding.bind_output, self._cpu
        bound[:] = [None] * len(bound)
        arrays: list = []
        runtime = []
        for index, ((name, element, _), request) in enumerate(zip(self._outs, requests)):
            buffer = out.get(name)
            if buffer is not None and index not in self._packed_out:
                bind(name, cpu, element, buffer.shape, buffer.ctypes.data)
                arrays.append(buffer)
            elif buffer is None and request is not None:
                array, address = self._take(request)
                bind(name, cpu, element, request[0], address)
                arrays.append(array)
            else:
                bind(name, cpu)
                arrays.append(None)
                runtime.append(index)
        try:
            self._execute(binding, deadline_ns)
        except EdgecoreError:
            raise
        except Exception:
            if len(runtime) == len(arrays):
                raise
            # An out buffer of the wrong shape, or a promised shape that was wrong: the rerun says which.
            return fill_out(self._rerun(binding, bound, requests, deadline_ns), out)
        if not runtime:
            return dict(zip(self._out_names, arrays))
        self._collect(binding, bound, arrays, runtime)
        result = dict(zip(self._out_names, arrays))
        late = {name: out[name] for name in (self._out_names[i] for i in runtime) if name in out}
        if late:  # 4-bit outputs: unpacked from the runtime's bytes into the caller's buffers
            result.update(fill_out({name: result[name] for name in late}, late))
        return result

    def _run_plain(
        self, feeds: dict[str, np.ndarray], out: Mapping[str, np.ndarray] | None, deadline_ns: int
    ) -> dict[str, np.ndarray]:
        """``session.run`` for models with string inputs or outputs (IOBinding cannot bind them)."""
        if deadline_ns:
            arrays = self._until(deadline_ns, self._sess.run, self._out_list, feeds)
        else:
            arrays = self._sess.run(self._out_list, feeds, None)
        if self._budget:
            nbytes = sum(array.nbytes for array in arrays if array.dtype.kind != "O")
            self._pool.check_budget(nbytes, "outputs onnxruntime allocated")
        return fill_out(dict(zip(self._out_names, arrays)), out)

    def _execute(self, binding: Any, deadline_ns: int) -> None:
        if deadline_ns:
            self._until(deadline_ns, self._sess.run_with_iobinding, binding)
        else:
            self._sess.run_with_iobinding(binding, None)

    def _until(self, deadline_ns: int, call: Any, *args: Any) -> Any:
        """``call(*args, run_options)``, stopped through ``RunOptions.terminate`` at ``deadline_ns``."""
        if time.perf_counter_ns() >= deadline_ns:
            raise RequestTimeoutError("cpu_simd: the request's deadline passed before its run started")
        options = self._run_options()
        timer = watch(deadline_ns, setattr, options, "terminate", True)
        try:
            result = call(*args, options)
        except Exception as exc:
            if timer.cancel():
                raise RequestTimeoutError(
                    "cpu_simd: the request's deadline passed during its run; onnxruntime stopped it"
                ) from exc
            raise
        if timer.cancel():
            raise RequestTimeoutError("cpu_simd: the request's deadline passed during its run")
        return result

    def end_profiling(self) -> str | None:
        """Stop ORT's profiler (``profile_ops``) and return its trace file path (the caller's to
        delete); later runs are not profiled. Without ``profile_ops``, None."""
        with self._lock:
            return self.session.end_profiling() if self.session.get_session_options().enable_profiling else None

    # -- per-operator profiling (profile_ops): see the module docstring --------------------------------

    def _flush_op_profile(self, profiler: Any, *, renew: bool = True) -> None:
        """Flush hook: merge ORT's kernel timings into the stopping session, then renew the session."""
        match = {"backend": self.backend}
        with self._profile_lock:
            if self._profile_closed or not profiler.spans("backend_execute", match):
                return
            session = self.session
            time_base = session.get_profiling_start_time_ns()
            path = session.end_profiling()
            if renew:
                try:
                    self._renew_session()
                except Exception:  # keep serving on the old session, unprofiled
                    logger.exception("cpu_simd: could not create a fresh profiling session; profile_ops stops here")
            else:
                self._profile_closed = True
        if not path:  # ended already (end_profiling() called by hand)
            return
        try:
            from edgecore_cpu_simd.ort_profile import merge_ort_profile  # ORT's format is read here, not in core

            added = merge_ort_profile(profiler, path, match=match, time_base_unix_ns=time_base, backend=self.backend)
            logger.debug("cpu_simd: merged %d onnxruntime profile events from %s", added, path)
        finally:
            _remove(path)

    def _renew_session(self) -> None:
        old = self.session
        fresh = new_session(self._model, old.get_session_options(), self._pool)
        self._retired.append(old)
        self.session, self._sess = fresh, fresh._sess
        self._profiling_now[:] = [fresh]
        self._local = threading.local()  # new bindings, on the new session

    def _close_op_profile(self) -> None:
        from edgecore.profiling import get_profiler

        profiler = get_profiler()
        profiler.remove_flush_hook(self._flush_hook)  # first: it takes the profiler's lock
        if profiler.active:  # this model's runs so far belong to the running trace
            self._flush_op_profile(profiler, renew=False)
        with self._profile_lock:
            self._profile_closed = True
            self._retired.clear()
        self._profile_cleanup()  # ends the open profile (else ORT writes it when the session dies)

    def memory_bytes(self) -> int:
        return self._weights_bytes

    def close(self) -> None:
        if self._op_profiling:
            self._close_op_profile()
        self._local = threading.local()


def _weak_hook(model: OrtCompiledModel) -> Any:
    ref = weakref.WeakMethod(model._flush_op_profile)

    def flush_cpu_simd_ops(profiler: Any) -> None:
        method = ref()
        if method is not None:
            method(profiler)

    return flush_cpu_simd_ops


def _end_profile(hook: Any, sessions: list) -> None:
    """Unregister ``hook``; end the profile of the session still profiling and delete its file."""
    from edgecore.profiling import get_profiler

    get_profiler().remove_flush_hook(hook)
    for session in sessions:
        try:
            _remove(session.end_profiling())  # "" when it ended already
        except Exception:  # at interpreter exit onnxruntime may be half torn down
            pass
    sessions.clear()


def _remove(path: str | None) -> None:
    if path:
        try:
            os.remove(path)
        except OSError:
            pass


def _request(shape: tuple[int, ...], dtype: np.dtype) -> tuple:
    return shape, dtype


def _fresh(request: tuple) -> tuple[np.ndarray, int]:
    """Output buffers without a pool (``enable_memory_pool=False``)."""
    array = np.empty(request[0], request[1])
    return array, array.ctypes.data
