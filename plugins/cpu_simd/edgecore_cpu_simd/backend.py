"""The ``cpu_simd`` backend: ONNX Runtime's CPU execution provider (MLAS kernels).

:class:`CpuSimdBackend` says whether ONNX Runtime is here, which operators its CPU provider lacks,
builds the ``SessionOptions`` for a :class:`~edgecore.backend.CompileOptions` and compiles a graph
into an :class:`~edgecore_cpu_simd.compiled.OrtCompiledModel` (how requests run: that module). Sessions
are created by :mod:`edgecore_cpu_simd.session`, which also caps a budgeted session's working memory.
Sessions log at severity 4 (fatal only): ONNX Runtime prints nothing to stderr, and its failures still
reach the caller as exceptions.

Memory (``CompileOptions.memory_mode``): "balanced" (the default) lets MLAS pre-pack weights (kept,
for models with large weights, in the artifact cache: :mod:`edgecore_cpu_simd.artifacts`) and takes
working memory from ONNX Runtime's arena; "min" turns pre-packing off (weights run as stored, mapped
from the file) and the arena too unless a memory budget asks for its capped arena. What each costs
in memory and speed is measured by ``benchmarks/memory_phases.py --memory-modes balanced,min``.
"""

from __future__ import annotations

import functools
import itertools
import os
import tempfile
from typing import TYPE_CHECKING, Any

from edgecore.backend import Availability, Backend, CompileOptions, DeviceInfo, op_name
from edgecore.errors import ConfigurationError, ModelLoadError
from edgecore_cpu_simd import artifacts
from edgecore_cpu_simd.compiled import OrtCompiledModel
from edgecore_cpu_simd.cpuinfo import cpu_description, logical_cores
from edgecore_cpu_simd.session import QUIET, budget, new_session, use_arena
from edgecore_cpu_simd.session import ort as _ort

if TYPE_CHECKING:
    from edgecore.graph import Graph

__all__ = ["CpuSimdBackend", "OrtCompiledModel"]

_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}

#: custom_options keys this backend understands, beside ORT session config keys ("session.*" ...).
_OPTIONS = {
    "allow_spinning": "session.intra_op.allow_spinning",
    "execution_mode": None,
    "enable_cpu_mem_arena": None,
    "enable_mem_pattern": None,
    "log_severity_level": None,
    "optimized_model_filepath": None,
    artifacts.OPTION: None,  # "auto" | True | False: the compiled-artifact cache (edgecore_cpu_simd.artifacts)
}
_CONFIG_PREFIXES = ("session.", "mlas.", "optimization.", "kernel.")
_profile_files = itertools.count()


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
        local = graph.local_functions
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
        so.log_severity_level = QUIET  # nothing on stderr; failures still raise
        if options.memory_mode == "min":  # weights as stored, and working memory from the system
            so.add_session_config_entry("session.disable_prepacking", "1")
            if not budget(options.memory_pool):  # a budget keeps its capped arena (sized as requested)
                so.enable_cpu_mem_arena = False
        if options.shared_cores:  # instances of one engine share the cores: a spinning one steals them
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        for key, value in options.options.items():
            self._apply_option(so, key, value)
        if budget(options.memory_pool) and so.enable_cpu_mem_arena:
            use_arena(so)  # working memory from an arena capped at the budget (see edgecore_cpu_simd.session)
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
        elif key == artifacts.OPTION:
            pass  # read by compile
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
        """A session of ``graph``: from the artifact cache (the ORT-optimized model with its
        pre-packed weights, loaded at ``ORT_DISABLE_ALL``; built on first use) for models with large
        weights, else straight from the graph's file or bytes. See :mod:`edgecore_cpu_simd.artifacts`."""
        if options.device not in ("auto", "cpu"):
            raise ConfigurationError(f"cpu_simd runs on the CPU only, not on device {options.device!r}")
        so = self.session_options(options)
        if artifacts.wants_cache(graph, options):
            level = _level_name(so)
            cached, built, pin = artifacts.cached_model(graph, options, self.session_options, level)
            if cached is not None:
                so.graph_optimization_level = _ort().GraphOptimizationLevel.ORT_DISABLE_ALL
                try:
                    session = new_session(str(cached), so, options.memory_pool)
                    compiled = OrtCompiledModel(session, graph, options, str(cached))
                    compiled.cache_pin = pin  # the entry stays while the model lives
                    return compiled
                except Exception as exc:
                    artifacts.discard(cached, exc)
                    so = self.session_options(options)
        try:
            model = graph.runtime_model(options.cache_dir)
            session = new_session(model, so, options.memory_pool)
        except Exception as exc:
            raise ModelLoadError(f"onnxruntime could not compile {graph.name}: {exc}") from exc
        return OrtCompiledModel(session, graph, options, model)


def _level_name(so: Any) -> str:
    return str(so.graph_optimization_level).rsplit(".", 1)[-1]
