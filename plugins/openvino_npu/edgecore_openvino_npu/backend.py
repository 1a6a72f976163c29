"""The ``openvino`` backend: OpenVINO's CPU, GPU, NPU and AUTO devices.

Compiling: the edgecore Graph's serialized ONNX goes to OpenVINO in memory (``compile_model`` on
the bytes; no temporary files). Dynamic models compile once; on the NPU (or with the
``static_buckets`` option anywhere) they compile per static-shape bucket on first use, from one
``ov.Model`` read once and reshaped (see :mod:`.buckets`). ``CACHE_DIR`` is on by default: compiled
blobs live in a per-user folder keyed by OpenVINO's version and the graph's fingerprint, and
OpenVINO's own blob hash covers device and properties, so a changed model or runtime never loads a
stale blob.

Concurrency: one backend instance per process; ``compile`` may run from several threads (``ov.Core``
is thread-safe); the ``unsupported_ops`` memo takes a lock.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import attrs

from edgecore.backend import Availability, Backend, CompileOptions, DeviceInfo, op_name
from edgecore.errors import BackendUnavailableError, ConfigurationError, ModelLoadError, UnsupportedOperatorError

from edgecore_openvino_npu import _ov
from edgecore_openvino_npu.buckets import BucketPlan
from edgecore_openvino_npu.compiled import Executable, OpenVinoCompiledModel, _plain, _port_index
from edgecore_openvino_npu.devices import list_devices
from edgecore_openvino_npu.options import OvSettings, resolve

if TYPE_CHECKING:
    from edgecore.graph import Graph

logger = logging.getLogger(__name__)

__all__ = ["OpenVinoBackend"]

_UNCONVERTED = ("NotSupportedONNXNode", "ONNXFrameworkNode", "FrameworkNode")
_MEMO = 32  # graphs whose unsupported-op lists are remembered


class OpenVinoBackend(Backend):
    """OpenVINO runtime over the devices it finds here."""

    name = "openvino"

    def __init__(self) -> None:
        self._unsupported: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def availability(self) -> Availability:
        try:
            ov = _ov.runtime()
        except Exception as exc:  # ImportError, or a broken install raising anything at import
            return Availability(
                ok=False, reason=f"openvino cannot be imported ({exc!r}); pip install openvino (or edgecore-openvino-npu)"
            )
        try:
            devices = list(_ov.core().available_devices)
        except Exception as exc:
            return Availability(ok=False, reason=f"openvino {ov.get_version()} failed to start its Core: {exc!r}")
        if not devices:
            return Availability(ok=False, reason=f"openvino {_ov.short_version()} finds no device (no CPU plugin?)")
        return Availability(ok=True)

    def devices(self) -> list[DeviceInfo]:
        return list_devices()

    # -- operators ---------------------------------------------------------------------------------

    def unsupported_ops(self, graph: Graph) -> list[str]:
        """ONNX operators OpenVINO's ONNX frontend cannot convert (from a partial conversion)."""
        key = graph.fingerprint
        with self._lock:
            if key in self._unsupported:
                return list(self._unsupported[key])
        from openvino.frontend import FrontEndManager

        frontend = FrontEndManager().load_by_framework("onnx")
        try:
            source = graph.runtime_model()
            model = frontend.convert_partially(frontend.load(io.BytesIO(source) if isinstance(source, bytes) else source))
        except Exception as exc:  # a model the frontend cannot even parse: every op is suspect
            logger.warning("openvino: ONNX frontend failed on %s: %r", graph.name, exc)
            missing = sorted({op_name(d, t) for d, t in graph.op_types()})
        else:
            missing = sorted(_unconverted(model))
        with self._lock:
            if len(self._unsupported) >= _MEMO:
                self._unsupported.pop(next(iter(self._unsupported)))
            self._unsupported[key] = missing
        return list(missing)

    # -- compiling ---------------------------------------------------------------------------------

    def compile(self, graph: Graph, options: CompileOptions) -> OpenVinoCompiledModel:
        availability = self.availability()
        if not availability.ok:
            raise BackendUnavailableError(f"openvino is unavailable: {availability.reason}")
        _refuse_strings(graph)
        settings = _without_unsafe_cache(resolve(options, graph.fingerprint), graph)
        properties = self.properties(settings)
        plan = template = None
        if settings.buckets:
            sizes = None if settings.buckets is True else settings.buckets
            if not all(s.is_static for s in graph.inputs):
                template = self._read(graph)
            plan = BucketPlan(graph.inputs, graph.outputs, sizes,
                              infer_shapes=_shape_inference(template, graph) if template is not None else None)
            if not plan.is_dynamic:
                plan = None
        if plan is None and settings.kind == "npu" and not all(s.is_static for s in graph.inputs):
            raise ConfigurationError(
                f"the NPU takes static shapes only, and {graph.name} has dynamic inputs "
                f"{[f'{s.name}: {s.describe()}' for s in graph.inputs if not s.is_static]}; keep static_buckets on"
            )
        started = time.perf_counter()
        if plan is None:
            compiled = self._compile(graph.runtime_model(), graph, settings, properties)
            exe = Executable(compiled, [s.name for s in graph.inputs], [s.name for s in graph.outputs],
                             options.memory_pool,
                             rebuild=lambda: self._compile(graph.runtime_model(), graph, settings, properties))
            model = OpenVinoCompiledModel(graph, device=settings.device, pool=options.memory_pool, executable=exe,
                                          profile=options.profile_ops)
            self._check_precision(compiled, settings)
        else:

            def build(shapes: list[tuple[int, ...]]) -> Any:
                static = template.clone()
                static.reshape({name: list(shape) for name, shape in zip([s.name for s in graph.inputs], shapes)})
                return self._compile(static, graph, settings, properties)

            model = OpenVinoCompiledModel(graph, device=settings.device, pool=options.memory_pool, plan=plan,
                                          build=build, profile=options.profile_ops)
        logger.info(
            "openvino: %s on %s (%s) ready in %.0f ms; cache %s",
            graph.name, settings.device, "buckets " + str(dict(zip(plan.dims, plan.sizes))) if plan else "dynamic",
            (time.perf_counter() - started) * 1e3, settings.cache_dir or "off",
        )
        return model

    @staticmethod
    def properties(settings: OvSettings) -> dict[str, Any]:
        """The ``compile_model`` properties for ``settings`` (public so that baselines use the same)."""
        properties = dict(settings.properties)
        if settings.cache_dir is not None:
            properties["CACHE_DIR"] = str(settings.cache_dir)
        return properties

    def _compile(self, model: Any, graph: Graph, settings: OvSettings, properties: dict[str, Any]) -> Any:
        core = _ov.core()
        try:
            if isinstance(model, bytes):
                return core.compile_model(model, settings.device, properties, weights=b"")
            return core.compile_model(model, settings.device, properties)
        except RuntimeError as exc:
            message = _last_lines(exc)
            if "propert" in message.lower() or "value" in message.lower():
                raise ConfigurationError(
                    f"openvino rejected the settings {properties} for {settings.device}: {message}"
                ) from exc
            raise ModelLoadError(f"openvino could not compile {graph.name} for {settings.device}: {message}") from exc

    def _read(self, graph: Graph) -> Any:
        ov = _ov.runtime()
        import numpy as np

        try:
            source = graph.runtime_model()
            if isinstance(source, bytes):
                return _ov.core().read_model(model=source, weights=ov.Tensor(np.empty(0, np.uint8)))
            return _ov.core().read_model(model=source)
        except RuntimeError as exc:
            raise ModelLoadError(f"openvino could not read {graph.name}: {_last_lines(exc)}") from exc

    @staticmethod
    def _check_precision(compiled: Any, settings: OvSettings) -> None:
        if settings.precision is None:
            return
        try:
            effective = _plain(compiled.get_property("INFERENCE_PRECISION_HINT"))
        except Exception:  # virtual devices do not report it
            return
        if effective != settings.precision:
            logger.warning(
                "openvino: %s was asked for %s precision and runs %s (the device lacks it)",
                settings.device, settings.precision, effective,
            )


#: operators whose compiled blobs OpenVINO 2026.4 imports wrong from its CACHE_DIR (the second start
#: of a RotaryEmbedding-23 model answers with up to 100% error); such models compile without the cache
CACHE_UNSAFE_OPS = frozenset({("", "RotaryEmbedding"), ("ai.onnx", "RotaryEmbedding")})


def _without_unsafe_cache(settings: OvSettings, graph: Graph) -> OvSettings:
    if settings.cache_dir is None:
        return settings
    unsafe = graph.op_types() & CACHE_UNSAFE_OPS
    if not unsafe:
        return settings
    logger.warning(
        "openvino: %s has %s, whose compiled blobs OpenVINO imports wrong from its cache; compiling "
        "without the cache", graph.name, ", ".join(sorted(op for _, op in unsafe)),
    )
    return attrs.evolve(settings, cache_dir=None)


def _refuse_strings(graph: Graph) -> None:
    """String tensors are refused at compile: OpenVINO 2026.4 runs an Identity on them but aborts the
    whole process ("double free or corruption") on a Reshape of one, and its ONNX frontend needs
    openvino-tokenizers for the string operators. ONNX Runtime (backend ``cpu_simd``) runs them."""
    if not graph.has_strings:  # known without reading the model on a start from cached metadata
        return
    import onnx_ir as ir

    found = [f"input {s.name!r}" for s in graph.inputs if s.dtype.numpy.kind == "O"]
    found += [f"output {s.name!r}" for s in graph.outputs if s.dtype.numpy.kind == "O"]
    ops = set()
    for node in ir.traversal.RecursiveGraphIterator(graph.model.graph):
        values = [v for v in node.outputs if v is not None and v.dtype == ir.DataType.STRING]
        cast = node.op_type == "Cast" and node.attributes.get("to") is not None and \
            node.attributes["to"].value == ir.DataType.STRING
        if values or cast:
            ops.add(op_name(node.domain, node.op_type))
            if len(found) < 8:
                found.append(f"{node.op_type} node {node.name!r}")
    found += [f"initializer {name!r}" for name, v in graph.model.graph.initializers.items()
              if v.dtype == ir.DataType.STRING]
    if found:
        raise UnsupportedOperatorError(
            f"openvino does not run string tensors (its CPU plugin aborts the process on some string "
            f"operations); {graph.name} has string {', '.join(found)}. Use backend 'cpu_simd' (ONNX Runtime), "
            f"which runs them",
            ops=tuple(sorted(ops)) or ("string tensors",),
        )


def _shape_inference(template: Any, graph: Graph) -> Any:
    """``shapes(input shapes) -> output shapes`` by OpenVINO's shape inference on ``template``
    (graph output order; None for a dimension OpenVINO cannot size from the input shapes)."""
    in_names = [s.name for s in graph.inputs]
    out_index = [_port_index(template.outputs, s.name) for s in graph.outputs]

    def shapes(input_shapes: list[tuple[int, ...]]) -> list[tuple[int | None, ...]]:
        model = template.clone()
        model.reshape({name: list(shape) for name, shape in zip(in_names, input_shapes)})
        found = []
        for i in out_index:
            partial = model.outputs[i].get_partial_shape()
            found.append(tuple(d.get_length() if d.is_static else None for d in partial))
        return found

    return shapes


def _unconverted(model: Any) -> set[str]:
    missing = set()
    for op in model.get_ordered_ops():
        if op.get_type_name() in _UNCONVERTED:
            attributes = op.get_attributes()
            domain = attributes.get("ONNX_META_domain", "")
            missing.add(op_name(domain, attributes.get("ONNX_META_type", op.get_friendly_name())))
    return missing


def _last_lines(exc: BaseException, lines: int = 4) -> str:
    text = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(text[-lines:]) if text else repr(exc)
