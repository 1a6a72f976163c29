"""The ``cpu_simd`` backend: ONNX Runtime's CPU execution provider.

Outputs are written straight into buffers from the engine's memory pool through IOBinding: after the
first request of a given input shape (which ORT allocates, and which tells us the output shapes),
every request binds pool buffers, so steady-state inference allocates no fresh output memory. Each
thread keeps up to ``_SLOTS`` sets of such buffers per input shape and reuses a set once nothing but
the slot refers to its arrays (a view holds its base, so a held view keeps its set out of use): the
arrays handed back stay the caller's for as long as the caller keeps them.

Concurrency: one ``InferenceSession`` serves every thread (ORT's ``run`` is thread-safe); each thread
keeps its own IOBinding (bindings are not), created on first use.

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
import sys
import functools
import itertools
import logging
import os
import tempfile
import threading
import weakref
from typing import Any, Mapping

import numpy as np

from edgecore.backend import Availability, Backend, CompiledModel, CompileOptions, DeviceInfo, op_name
from edgecore.errors import ConfigurationError, InvalidInputError, ModelLoadError
from edgecore.graph import Graph
from edgecore_cpu_simd.cpuinfo import cpu_description, logical_cores

logger = logging.getLogger(__name__)

_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}

#: custom_options keys this backend understands, beside ORT session config keys ("session.*" ...).
_OPTIONS = {
    "allow_spinning": "session.intra_op.allow_spinning",
    "execution_mode": None,
    "enable_cpu_mem_arena": None,
    "enable_mem_pattern": None,
    "log_severity_level": None,
    "optimized_model_filepath": None,
}
_CONFIG_PREFIXES = ("session.", "mlas.", "optimization.", "kernel.")
_SHAPE_CACHE = 64  # distinct input-shape signatures whose output shapes are remembered
_SLOTS = 4  # output buffer sets kept per thread and shape; callers holding more get fresh pool buffers


def _unheld(arrays: tuple[np.ndarray, ...], refcount=sys.getrefcount) -> bool:
    """Whether nobody but the slot holds these arrays (a view holds its base, so views count)."""
    for array in arrays:
        if refcount(array) > _FREE_REFS:
            return False
    return True


#: References to a slot array nobody else holds, counted as _unheld counts them (tuple, loop name, argument).
_FREE_REFS = max(sys.getrefcount(array) for array in (np.empty(1),))
_RETIRED = 2  # sessions replaced by a profiling renewal, kept alive for bindings still in flight
_profile_files = itertools.count()


@functools.cache
def _ort():
    import onnxruntime

    return onnxruntime


@functools.cache
def _cpu_kernels() -> frozenset[tuple[str, str]]:
    from onnxruntime.capi import _pybind_state as C

    kernels = {(d.domain or "", d.op_name) for d in C.get_all_opkernel_def() if d.provider == "CPUExecutionProvider"}
    return frozenset(kernels | {("", "Constant")})  # ORT turns Constant nodes into initializers at load


def _onnx_function_op(domain: str, op_type: str, opset: int) -> bool:
    """Ops that ONNX defines as functions run wherever their expansion runs."""
    import onnx.defs

    try:
        schema = onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return False
    return schema.has_function or schema.has_context_dependent_function


class CpuSimdBackend(Backend):
    """ONNX Runtime on the CPU, with MLAS kernels for the SIMD extensions this CPU has."""

    name = "cpu_simd"

    def availability(self) -> Availability:
        try:
            ort = _ort()
        except ImportError as exc:
            return Availability(ok=False, reason=f"onnxruntime is not installed ({exc}); pip install onnxruntime")
        if "CPUExecutionProvider" not in ort.get_available_providers():
            return Availability(ok=False, reason=f"onnxruntime {ort.__version__} has no CPUExecutionProvider")
        return Availability(ok=True)

    def devices(self) -> list[DeviceInfo]:
        model, features = cpu_description()
        properties: dict[str, Any] = {"simd": list(features), "logical_cores": logical_cores()}
        try:
            properties["onnxruntime"] = _ort().__version__
        except ImportError:
            pass
        return [DeviceInfo(name="cpu", kind="cpu", description=model, properties=properties)]

    def unsupported_ops(self, graph: Graph) -> list[str]:
        kernels = _cpu_kernels()
        local = {(f.domain, f.name) for f in graph.model.functions.values()}
        opset = graph.opset
        missing = {
            op_name(domain, op)
            for domain, op in graph.op_types()
            if (domain, op) not in kernels
            and (domain, op) not in local
            and not (domain in ("", "ai.onnx") and _onnx_function_op("", op, opset))
        }
        return sorted(missing)

    def session_options(self, options: CompileOptions) -> Any:
        """ORT SessionOptions for ``options`` (public so that baselines use the very same settings)."""
        ort = _ort()
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.num_threads
        so.inter_op_num_threads = options.inter_op_threads
        level = options.graph_optimization_level
        if not options.enable_hardware_acceleration and level == "all":
            level = "extended"  # "all" adds the NCHWc layouts that target AVX2/AVX-512 blocks
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
        so.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL if options.inter_op_threads > 1 else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        if options.enable_hardware_acceleration:
            so.add_session_config_entry("session.set_denormal_as_zero", "1")
        so.log_severity_level = 3
        if options.shared_cores:  # instances of one engine share the cores: a spinning one steals them
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        for key, value in options.options.items():
            self._apply_option(so, key, value)
        if options.profile_ops:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(
                tempfile.gettempdir(), f"edgecore-ort-profile-{os.getpid()}-{next(_profile_files)}"
            )
        return so

    def _apply_option(self, so: Any, key: str, value: Any) -> None:
        ort = _ort()
        if key in _OPTIONS and _OPTIONS[key]:
            so.add_session_config_entry(_OPTIONS[key], str(int(value)) if isinstance(value, bool) else str(value))
        elif key == "execution_mode":
            modes = {"sequential": ort.ExecutionMode.ORT_SEQUENTIAL, "parallel": ort.ExecutionMode.ORT_PARALLEL}
            if value not in modes:
                raise ConfigurationError(f"cpu_simd option execution_mode must be one of {sorted(modes)}, got {value!r}")
            so.execution_mode = modes[value]
        elif key in _OPTIONS:
            setattr(so, key, value)
        elif key.startswith(_CONFIG_PREFIXES):
            so.add_session_config_entry(key, str(value))
        else:
            raise ConfigurationError(
                f"cpu_simd does not know option {key!r}; known: {sorted(_OPTIONS)} or any ONNX Runtime "
                f"session config key starting with {_CONFIG_PREFIXES}"
            )

    def compile(self, graph: Graph, options: CompileOptions) -> OrtCompiledModel:
        if options.device not in ("auto", "cpu"):
            raise ConfigurationError(f"cpu_simd runs on the CPU only, not on device {options.device!r}")
        ort = _ort()
        so = self.session_options(options)
        try:
            session = ort.InferenceSession(graph.to_bytes(), so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelLoadError(f"onnxruntime could not compile {graph.name}: {exc}") from exc
        return OrtCompiledModel(session, graph, options)


class OrtCompiledModel(CompiledModel):
    """An ONNX Runtime session plus per-thread IOBindings into pooled output buffers."""

    backend = "cpu_simd"

    def __init__(self, session: Any, graph: Graph, options: CompileOptions) -> None:
        from onnxruntime.capi import _pybind_state as C

        self.session = session
        self.inputs = graph.inputs
        self.outputs = graph.outputs
        self._sess = session._sess
        self._pool = options.memory_pool
        self._cpu = C.OrtDevice(C.OrtDevice.cpu(), C.OrtDevice.default_memory(), 0)
        self._binding_type = C.SessionIOBinding
        self._out_names = tuple(spec.name for spec in self.outputs)
        self._out_dtypes = tuple(spec.dtype.numpy for spec in self.outputs)
        self._out_shapes: dict[tuple, tuple[tuple[int, ...], ...]] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._weights_bytes = sum(
            v.const_value.nbytes for v in graph.model.graph.initializers.values() if v.const_value is not None
        )
        self._op_profiling = bool(options.profile_ops) and session.get_session_options().enable_profiling
        if self._op_profiling:
            from edgecore.profiling import get_profiler

            self._graph = graph  # to build a fresh profiling session after each merge
            self._retired: collections.deque = collections.deque(maxlen=_RETIRED)
            self._profile_lock = threading.Lock()
            self._profile_closed = False
            # The profiler holds the hook, the hook holds this model weakly; a model dropped without
            # close() still unregisters and ends (and deletes) its profile, also at interpreter exit.
            self._profiling_now = [session]  # the session whose profile is open
            self._flush_hook = _weak_hook(self)
            get_profiler().add_flush_hook(self._flush_hook)
            self._profile_cleanup = weakref.finalize(self, _end_profile, self._flush_hook, self._profiling_now)

    def _new_binding(self) -> Any:
        binding = self._local.binding = self._binding_type(self._sess)
        self._local.slots = {}
        return binding

    def _run(self, feeds: dict[str, np.ndarray], out: Mapping[str, np.ndarray] | None, deadline_ns: int = 0) -> dict[str, np.ndarray]:
        local = self._local
        binding = getattr(local, "binding", None) or self._new_binding()
        bind, copies = binding.bind_input, []  # the binding keeps raw pointers: copies must outlive the run
        for name, array in feeds.items():
            if not array.flags.c_contiguous:
                array = np.ascontiguousarray(array)
                copies.append(array)
            bind(name, array)
        if out is not None:
            return self._run_into(binding, out)
        key = tuple([array.shape for array in feeds.values()])
        slots = local.slots.get(key)
        if slots is None:
            if key not in self._out_shapes or self._pool is None:
                return self._run_allocating(binding, key)
            slots = self._new_slots(key)
        for arrays, addresses in slots:
            if _unheld(arrays):
                break
        else:
            arrays, addresses = self._new_slot(key, slots)
        bind, cpu = binding.bind_output, self._cpu
        for name, dtype, array, address in zip(self._out_names, self._out_dtypes, arrays, addresses):
            bind(name, cpu, dtype, array.shape, address)
        self._sess.run_with_iobinding(binding, None)
        return dict(zip(self._out_names, arrays))

    def _new_slots(self, key: tuple) -> list:
        slots = self._local.slots
        if len(slots) >= _SHAPE_CACHE:
            slots.pop(next(iter(slots)))
        slots[key] = []
        return slots[key]

    def _new_slot(self, key: tuple, slots: list) -> tuple[tuple[np.ndarray, ...], tuple[int, ...]]:
        """Output buffers for one more request in flight (the caller still holds the others)."""
        shapes = self._out_shapes[key]
        acquired = [self._pool.acquire_with_address(shape, dtype) for shape, dtype in zip(shapes, self._out_dtypes)]
        slot = tuple(array for array, _ in acquired), tuple(address for _, address in acquired)
        if len(slots) < _SLOTS:
            slots.append(slot)
        return slot

    def _run_allocating(self, binding: Any, key: tuple) -> dict[str, np.ndarray]:
        """First request of a shape: ORT allocates the outputs and tells us their shapes."""
        for name in self._out_names:
            binding.bind_output(name, self._cpu)
        self._sess.run_with_iobinding(binding, None)
        arrays = binding.copy_outputs_to_cpu()
        binding.clear_binding_outputs()
        with self._lock:
            if len(self._out_shapes) >= _SHAPE_CACHE:
                self._out_shapes.pop(next(iter(self._out_shapes)))
            self._out_shapes[key] = tuple(a.shape for a in arrays)
        return dict(zip(self._out_names, arrays))

    def _run_into(self, binding: Any, out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        unknown = set(out) - set(self._out_names)
        if unknown:
            raise InvalidInputError(f"out names {sorted(unknown)} are not outputs; outputs: {list(self._out_names)}")
        for name, dtype in zip(self._out_names, self._out_dtypes):
            buffer = out.get(name)
            if buffer is None:
                binding.bind_output(name, self._cpu)
                continue
            if buffer.dtype != dtype or not buffer.flags.c_contiguous or not buffer.flags.writeable:
                raise InvalidInputError(
                    f"out buffer {name!r} must be a writeable C-contiguous {dtype} array, got "
                    f"{buffer.dtype} (contiguous={buffer.flags.c_contiguous}, writeable={buffer.flags.writeable})"
                )
            binding.bind_output(name, self._cpu, dtype, buffer.shape, buffer.ctypes.data)
        try:
            self._sess.run_with_iobinding(binding, None)
        except Exception as exc:
            raise InvalidInputError(f"outputs do not fit the given out buffers: {exc}") from exc
        missing = [n for n in self._out_names if n not in out]
        result = dict(out)
        if missing:
            fresh = binding.copy_outputs_to_cpu()
            result.update({n: fresh[self._out_names.index(n)] for n in missing})
        binding.clear_binding_outputs()
        return {name: result[name] for name in self._out_names}

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
        ort = _ort()
        old = self.session
        fresh = ort.InferenceSession(self._graph.to_bytes(), old.get_session_options(), providers=["CPUExecutionProvider"])
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
