"""What a plugin manager decides for a model: where its source comes from, and which backend runs it.

One place for both, used by :class:`~edgecore.engine.Engine`, the optimizer and the benchmark
harness alike, each with the plugin manager it was given:

* :func:`load_graph` resolves names such as ``"zoo:resnet50"`` through the ``edgecore_resolve_model``
  hook of *that* manager, then loads and validates the model (:meth:`Graph.load`).
* :func:`candidate_backends` lists the backends that can serve a graph, best first: the one the
  ``edgecore_select_backend`` hook picks, then (for ``backend="auto"``) every other available one
  that runs all of its operators, as fallbacks should the first fail to compile.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from edgecore.backend import Backend, CompiledModel, CompileOptions, backend_for
from edgecore.errors import (
    BackendExecutionError,
    BackendUnavailableError,
    ConfigurationError,
    EdgecoreError,
    ModelLoadError,
    UnsupportedOperatorError,
)
from edgecore.graph import Graph

if TYPE_CHECKING:
    from edgecore.graph import ModelSource
    from edgecore.plugins import PluginManager
    from edgecore.specs import BackendSpec

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "available_backend",
    "candidate_backends",
    "compile_on",
    "compile_first",
    "load_graph",
    "resolve_model",
    "plugin_label",
]


def resolve_model(source: ModelSource, plugin_manager: PluginManager) -> Any:
    """``source`` with model names (``"zoo:NAME"``, or any a plugin resolves) turned into a
    ``ModelProto``; paths, bytes, protos and graphs pass through unchanged."""
    if isinstance(source, str) and ":" in source.split("/", 1)[0] and len(source.split(":", 1)[0]) > 1:
        resolved = plugin_manager.hook.edgecore_resolve_model(source=source, plugin_manager=plugin_manager)
        if resolved is not None:
            return resolved
        if source.startswith("zoo:"):
            raise ModelLoadError(f"no plugin resolves model name {source!r}; is the zoo plugin registered?")
    return source


def load_graph(
    source: ModelSource, plugin_manager: PluginManager | None = None, *, check: bool = True, cache_dir: Any = None
) -> Graph:
    """Resolve ``source`` through ``plugin_manager`` (default: the process-wide one) and load it
    (``cache_dir``: where large inline weights are converted to external data, see :meth:`Graph.load`)."""
    if plugin_manager is None:
        from edgecore.plugins import get_plugin_manager

        plugin_manager = get_plugin_manager()
    resolved = resolve_model(source, plugin_manager)
    graph = Graph.load(resolved, check=check, cache_dir=cache_dir)
    if resolved is not source and isinstance(source, str):
        graph.source = source
    return graph


def plugin_label(plugin_manager: PluginManager, spec: BackendSpec) -> str:
    """``backend 'x' (plugin 'p', distribution 'd')``, as far as the manager knows."""
    try:
        plugin = plugin_manager.source_of("edgecore_backends", spec.name)
    except KeyError:
        return f"backend {spec.name!r}"
    dist = plugin_manager.distribution_of(plugin)
    return f"backend {spec.name!r} (plugin {plugin!r}" + (f", distribution {dist!r})" if dist else ")")


def available_backend(spec: BackendSpec, plugin_manager: PluginManager | None = None) -> Backend:
    """The backend of ``spec``, or :class:`BackendUnavailableError` saying why it cannot run here."""
    label = plugin_label(plugin_manager, spec) if plugin_manager is not None else f"backend {spec.name!r}"
    try:
        backend = backend_for(spec)
        availability = backend.availability()
    except Exception as exc:
        raise BackendUnavailableError(f"{label} failed to initialize: {exc!r}") from exc
    if not availability.ok:
        raise BackendUnavailableError(f"{label} is unavailable: {availability.reason}")
    return backend


def candidate_backends(graph: Graph, config: Any, plugin_manager: PluginManager) -> list[BackendSpec]:
    """Backends to try for ``graph`` under ``config`` (its ``backend`` and ``device``), best first.

    A named backend gives a list of one (unavailable or lacking operators: a clear error). With
    ``"auto"``: the ``edgecore_select_backend`` hook's choice first, then every other available
    backend that runs all of the graph's operators, by priority.
    """
    specs = plugin_manager.backends()
    wanted, device = config.backend, config.device
    if wanted != "auto":
        spec = specs.get(wanted)
        if spec is None:
            raise BackendUnavailableError(
                f"no backend named {wanted!r} is registered; registered: {sorted(specs) or 'none'}. "
                f"{plugin_manager.why_missing(wanted)}"
            )
        unsupported = available_backend(spec, plugin_manager).unsupported_ops(graph)
        if unsupported:
            raise unsupported_error(graph, {spec.name: unsupported}, plugin_manager)
        return [spec]
    candidates, reasons = [], {}
    for spec in specs.values():
        if device != "auto" and device not in spec.devices:
            reasons[spec.name] = f"serves devices {list(spec.devices)}, not {device!r}"
            continue
        try:
            available_backend(spec, plugin_manager)
        except BackendUnavailableError as exc:
            reasons[spec.name] = str(exc)
            continue
        candidates.append(spec)
    if not candidates:
        detail = "; ".join(f"{name}: {why}" for name, why in reasons.items()) or "no backend plugin is installed"
        raise BackendUnavailableError(
            f"no backend can run on device {device!r} here ({detail}){_broken_plugins(plugin_manager)}. "
            f"Install a backend plugin, e.g. pip install edgecore-cpu-simd"
        )
    chosen = plugin_manager.hook.edgecore_select_backend(graph=graph, candidates=candidates, config=config)
    if chosen is None:
        raise unsupported_error(graph, {s.name: backend_for(s).unsupported_ops(graph) for s in candidates}, plugin_manager)
    fallbacks = [s for s in candidates if s is not chosen and not backend_for(s).unsupported_ops(graph)]
    return [chosen, *fallbacks]


def compile_on(
    spec: BackendSpec, graph: Graph, options: CompileOptions, plugin_manager: PluginManager
) -> CompiledModel:
    """``graph`` compiled by ``spec``'s backend; a plugin's own exception becomes
    :class:`BackendExecutionError` naming the backend, its plugin and distribution."""
    backend = available_backend(spec, plugin_manager)
    try:
        return backend.compile(graph, options)
    except EdgecoreError:
        raise
    except Exception as exc:
        plugin = plugin_manager.source_of("edgecore_backends", spec.name)
        raise BackendExecutionError(
            f"{plugin_label(plugin_manager, spec)} failed to compile {graph.name}: {type(exc).__name__}: {exc}",
            backend=spec.name,
            distribution=plugin_manager.distribution_of(plugin),
        ) from exc


def compile_first(
    candidates: list[BackendSpec], build: Callable[[BackendSpec], T]
) -> tuple[BackendSpec, T, tuple[tuple[str, str], ...]]:
    """``build(spec)`` on each candidate in turn until one succeeds: ``(spec, result, failures)``.

    A candidate that raises an :class:`EdgecoreError` is logged and the next one is tried; the
    last candidate's error, or a :class:`ConfigurationError` (the caller's settings), is raised with
    a note naming the backends tried before.
    """
    failures: list[tuple[str, str]] = []
    for position, spec in enumerate(candidates):
        try:
            return spec, build(spec), tuple(failures)
        except EdgecoreError as exc:
            if position + 1 == len(candidates) or isinstance(exc, ConfigurationError):
                if failures:
                    exc.add_note("backends tried before: " + "; ".join(f"{n}: {e}" for n, e in failures))
                raise
            failures.append((spec.name, str(exc)))
            logger.warning("%s; falling back to backend %r", exc, candidates[position + 1].name)
    raise BackendUnavailableError("no backend to compile on")


def unsupported_error(
    graph: Graph, missing: dict[str, list[str]], plugin_manager: PluginManager
) -> UnsupportedOperatorError:
    ops = sorted({op for names in missing.values() for op in names})
    have = {}
    for spec in plugin_manager.backends().values():
        try:
            lacking = set(backend_for(spec).unsupported_ops(graph))
        except Exception:
            continue
        have[spec.name] = [op for op in ops if op not in lacking]
    detail = "; ".join(f"{name} lacks {names}" for name, names in missing.items())
    return UnsupportedOperatorError(
        f"{graph.name}: no selected backend runs every operator ({detail}); backends that have "
        f"them: { {k: v for k, v in have.items() if v} or 'none' }",
        ops=tuple(ops),
        available=have,
    )


def _broken_plugins(plugin_manager: PluginManager) -> str:
    problems = plugin_manager.load_problems()  # plugins that failed to load, autoload disabled
    return f"; {problems}" if problems else ""
