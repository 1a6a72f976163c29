"""Plugin discovery and the registries built from the hooks.

``get_plugin_manager()`` builds the process-wide manager once: core's built-in plugins first, then
every entry point of group ``edgecore``, each loaded inside its own try/except. A plugin that fails to
import is logged and recorded in :attr:`PluginManager.failures` (``edgecore backends`` lists it)
instead of breaking edgecore, unless ``EDGECORE_STRICT_PLUGINS=1``. With
``EDGECORE_DISABLE_PLUGIN_AUTOLOAD=1`` no entry point is loaded (built-ins still are), and errors
about a missing backend say so (:meth:`PluginManager.why_missing`).

Registries are built by calling the hooks through pluggy (``pm.hook.edgecore_backends()``), so that
``hookwrapper``/``wrapper`` implementations, ``tryfirst``/``trylast`` and pluggy's tracing apply.
pluggy's results do not say which plugin returned what, so the manager wraps each registration
hook implementation when it is registered (a transparent function that notes the records it
returns); that is how a duplicate name names both plugins. Order of a registry: records of
``tryfirst`` implementations first, then the others in registration order (built-ins, then entry
points), then ``trylast`` ones; records a hook wrapper added come last and are attributed to it.

Tests build their own manager with :func:`build_plugin_manager` and call ``check_pending()``.

Concurrency: registries are built once per manager under a lock (and again after ``register``/
``unregister``); the records a call returns are noted in a thread-local, so a hook called
directly from another thread does not disturb a registry being built.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import os
import threading
from typing import Any, Iterable, TypeVar

import attrs
import pluggy

from edgecore import hookspecs
from edgecore.errors import PluginError
from edgecore.specs import (
    BackendSpec,
    BaselineSpec,
    DatasetSpec,
    ModelSpec,
    PassSpec,
    ReporterSpec,
    ScenarioSpec,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PLUGINS",
    "REGISTRATION_HOOKS",
    "PluginFailure",
    "PluginManager",
    "build_plugin_manager",
    "get_plugin_manager",
]

GROUP = hookspecs.PROJECT
AUTOLOAD_ENV = "EDGECORE_DISABLE_PLUGIN_AUTOLOAD"
STRICT_ENV = "EDGECORE_STRICT_PLUGINS"

#: Core's own plugins: registered through the same hooks as third parties. They are named here, not
#: imported (several sit in layer 8), and loaded by name exactly as entry points are.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "edgecore._default_plugin",
    "edgecore.zoo.plugin",
    "edgecore.bench.plugin",
    "edgecore.optimize.plugin",
    "edgecore.metrics.plugin",
)

#: Registration hooks and the record type each returns.
REGISTRATION_HOOKS: dict[str, type] = {
    "edgecore_backends": BackendSpec,
    "edgecore_passes": PassSpec,
    "edgecore_models": ModelSpec,
    "edgecore_bench_scenarios": ScenarioSpec,
    "edgecore_bench_reporters": ReporterSpec,
    "edgecore_bench_baselines": BaselineSpec,
    "edgecore_bench_datasets": DatasetSpec,
}

#: What a registry calls the source of records that a hook wrapper added.
WRAPPER_SOURCE = "<a hook wrapper>"

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class PluginFailure:
    """An entry point that is installed but could not be loaded, and why."""

    name: str
    distribution: str | None
    error: str


def _order(impl: Any, position: int) -> tuple[int, int]:
    return (0 if impl.tryfirst else 2 if impl.trylast else 1, position)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus edgecore's registries (collected once, duplicates refused)."""

    def __init__(self) -> None:
        super().__init__(GROUP)
        self.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        #: Whether entry points were loaded (False under EDGECORE_DISABLE_PLUGIN_AUTOLOAD=1).
        self.autoload = False
        self._lock = threading.RLock()
        self._local = threading.local()  # .notes: {id(record): (record, impl)} while a registry is built
        self._cache: dict[str, dict[str, Any]] = {}
        self._sources: dict[tuple[str, str], str] = {}
        self._distributions: dict[str, str | None] = {}

    # -- loading -----------------------------------------------------------------------------------

    def load_entrypoints(self, *, strict: bool = False) -> None:
        self.autoload = True
        for ep in importlib.metadata.entry_points(group=GROUP):
            if self.get_plugin(ep.name) is not None or self.is_blocked(ep.name):
                continue
            dist = ep.dist.name if ep.dist is not None else None
            try:
                module = ep.load()
                self.register(module, name=ep.name)
                self._distributions[ep.name] = dist
            except Exception as exc:  # a broken plugin must not break edgecore
                if strict:
                    raise PluginError(f"plugin {ep.name!r} ({dist}) failed to load: {exc!r}") from exc
                logger.warning("edgecore plugin %r (%s) failed to load: %r", ep.name, dist, exc)
                self.failures.append(PluginFailure(name=ep.name, distribution=dist, error=repr(exc)))
        self._clear()

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        if registered is not None:
            for hook_name in REGISTRATION_HOOKS:
                for impl in getattr(self.hook, hook_name).get_hookimpls():
                    if impl.plugin is plugin and not (impl.hookwrapper or impl.wrapper):
                        self._note_records(hook_name, impl)
        self._clear()
        return registered

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        removed = super().unregister(plugin, name)
        self._clear()
        return removed

    def _clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def _note_records(self, hook_name: str, impl: Any) -> None:
        """Wrap ``impl`` so that the records it returns are noted with their plugin (pluggy still
        calls it, in its order, inside any wrappers)."""
        function = impl.function
        if getattr(function, "_edgecore_noted", False):
            return
        local = self._local
        kind = REGISTRATION_HOOKS[hook_name]

        @functools.wraps(function)
        def noted(*args: Any, **kwargs: Any) -> Any:
            result = function(*args, **kwargs)
            if result is None:
                return None
            try:
                records = list(result)
            except TypeError:
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: {hook_name}() must return an iterable of {kind.__name__} "
                    f"records, got {type(result).__name__}"
                ) from None
            notes = getattr(local, "notes", None)
            if notes is not None:
                for record in records:
                    notes[id(record)] = (record, impl)
            return records

        noted._edgecore_noted = True  # type: ignore[attr-defined]
        impl.function = noted

    def distribution_of(self, plugin_name: str) -> str | None:
        """The distribution that installed plugin ``plugin_name`` (None for built-ins)."""
        return self._distributions.get(plugin_name)

    # -- registries --------------------------------------------------------------------------------

    def _collect(self, hook_name: str) -> dict[str, Any]:
        kind = REGISTRATION_HOOKS[hook_name]
        with self._lock:
            if hook_name in self._cache:
                return self._cache[hook_name]
            caller = getattr(self.hook, hook_name)
            self._local.notes = notes = {}
            try:
                results = caller()
            finally:
                self._local.notes = None
            plain = [i for i in caller.get_hookimpls() if not (i.hookwrapper or i.wrapper)]
            position = {id(impl): n for n, impl in enumerate(plain)}
            found: list[tuple[tuple[int, int], int, Any, str]] = []
            for chunk in results:
                for record in chunk if chunk is not None else ():
                    note = notes.get(id(record))
                    if note is not None and note[0] is record:
                        impl = note[1]
                        key, source = _order(impl, position.get(id(impl), len(plain))), impl.plugin_name
                    else:
                        key, source = (3, 0), WRAPPER_SOURCE
                    found.append((key, len(found), record, source))
            found.sort(key=lambda item: (item[0], item[1]))
            records: dict[str, Any] = {}
            sources: dict[str, str] = {}
            for _, _, record, source in found:
                if not isinstance(record, kind):
                    raise PluginError(
                        f"plugin {source!r}: {hook_name}() must return {kind.__name__} records, "
                        f"got {type(record).__name__}"
                    )
                if record.name in records:
                    raise PluginError(
                        f"{kind.__name__} name {record.name!r} is registered by both plugin "
                        f"{sources[record.name]!r} and plugin {source!r}; names must be unique"
                    )
                records[record.name] = record
                sources[record.name] = source
            for name, source in sources.items():
                self._sources[(hook_name, name)] = source
            self._cache[hook_name] = records
            return records

    def source_of(self, hook_name: str, name: str) -> str:
        """The plugin name that registered record ``name`` through ``hook_name`` (KeyError if none)."""
        if name not in self._collect(hook_name):
            raise KeyError(f"no record {name!r} from {hook_name}")
        return self._sources[(hook_name, name)]

    def backends(self) -> dict[str, BackendSpec]:
        """Registered backends, highest priority first (ties by name)."""
        found = self._collect("edgecore_backends")
        return dict(sorted(found.items(), key=lambda item: (-item[1].priority, item[0])))

    def passes(self) -> dict[str, PassSpec]:
        return self._collect("edgecore_passes")

    def models(self) -> dict[str, ModelSpec]:
        return self._collect("edgecore_models")

    def bench_scenarios(self) -> dict[str, ScenarioSpec]:
        return self._collect("edgecore_bench_scenarios")

    def bench_reporters(self) -> dict[str, ReporterSpec]:
        return self._collect("edgecore_bench_reporters")

    def bench_baselines(self) -> dict[str, BaselineSpec]:
        """Raw-runtime baselines, by the name of the backend whose runtime each one runs."""
        return self._collect("edgecore_bench_baselines")

    def bench_datasets(self) -> dict[str, DatasetSpec]:
        return self._collect("edgecore_bench_datasets")

    # -- explaining what is missing ----------------------------------------------------------------

    def load_problems(self) -> str:
        """Why plugins a user expects may be absent: the ones that failed to load (with their errors),
        and whether autoload is off. '' when neither."""
        parts = []
        if self.failures:
            parts.append("plugins installed but failed to load: " + ", ".join(
                f"{f.name} ({f.distribution or 'unknown distribution'}: {f.error})" for f in self.failures
            ))
        if not self.autoload:
            parts.append(f"plugin autoload is disabled ({AUTOLOAD_ENV}=1): no installed plugin was loaded")
        return "; ".join(parts)

    def why_missing(self, name: str, what: str = "backend") -> str:
        """Why no ``what`` named ``name`` is registered, and what to do, in one sentence or two."""
        installed = _installed_plugins()
        failed = {f.name: f for f in self.failures}
        if name in failed:
            f = failed[name]
            return (f"its plugin {name!r} ({f.distribution or 'unknown distribution'}) is installed but failed to "
                    f"load: {f.error}; fix that error (EDGECORE_STRICT_PLUGINS=1 raises it with its traceback)")
        if name in installed and not self.autoload:
            return (f"its plugin {name!r} ({installed[name]}) is installed but was not loaded: plugin autoload is "
                    f"disabled ({AUTOLOAD_ENV}=1); unset it, or register the plugin on this plugin manager")
        problems = self.load_problems()
        if problems:
            return f"{problems}. Otherwise, install the distribution that provides the {what} (pip install ...)"
        return "if a plugin provides it, install that plugin's distribution (pip install ...)"


@functools.cache
def _installed_plugins() -> dict[str, str]:
    """Entry-point name -> distribution, for every installed plugin (loaded or not)."""
    return {ep.name: (ep.dist.name if ep.dist is not None else "unknown distribution")
            for ep in importlib.metadata.entry_points(group=GROUP)}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def build_plugin_manager(
    *, builtins: Iterable[str] = DEFAULT_PLUGINS, entrypoints: bool | None = None, strict: bool | None = None
) -> PluginManager:
    """Build a fresh plugin manager.

    ``entrypoints`` defaults to the opposite of ``EDGECORE_DISABLE_PLUGIN_AUTOLOAD``; ``strict``
    defaults to ``EDGECORE_STRICT_PLUGINS``.
    """
    pm = PluginManager()
    for module_name in builtins:
        pm.register(importlib.import_module(module_name), name=module_name)
    if entrypoints is None:
        entrypoints = not _env_flag(AUTOLOAD_ENV)
    if strict is None:
        strict = _env_flag(STRICT_ENV)
    if entrypoints:
        pm.load_entrypoints(strict=strict)
    return pm


@functools.cache
def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, built on first use."""
    return build_plugin_manager()

