"""Plugin discovery and the registries built from the hooks.

``get_plugin_manager()`` builds the process-wide manager once: core's built-in plugins first, then
every entry point of group ``edgecore``, each loaded inside its own try/except. A plugin that fails to
import is logged and recorded in :attr:`PluginManager.failures` (``edgecore backends`` lists it)
instead of breaking edgecore, unless ``EDGECORE_STRICT_PLUGINS=1``. With
``EDGECORE_DISABLE_PLUGIN_AUTOLOAD=1`` no entry point is loaded (built-ins still are).

Tests build their own manager with :func:`build_plugin_manager` and call ``check_pending()``.
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
from edgecore.specs import BackendSpec, ModelSpec, PassSpec, ScenarioSpec

logger = logging.getLogger(__name__)

__all__ = ["PluginFailure", "PluginManager", "build_plugin_manager", "get_plugin_manager", "DEFAULT_PLUGINS"]

GROUP = hookspecs.PROJECT

#: Core's own plugins: registered through the same hooks as third parties.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "edgecore._default_plugin",
    "edgecore.zoo.plugin",
    "edgecore.bench.plugin",
    "edgecore.optimize.plugin",
    "edgecore.metrics.plugin",
)

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class PluginFailure:
    """An entry point that could not be loaded, and why."""

    name: str
    distribution: str | None
    error: str


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus edgecore's registries (collected once, duplicates refused)."""

    def __init__(self) -> None:
        super().__init__(GROUP)
        self.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self._lock = threading.Lock()
        self._cache: dict[str, dict[str, Any]] = {}
        self._sources: dict[tuple[str, str], str] = {}
        self._distributions: dict[str, str | None] = {}

    # -- loading -----------------------------------------------------------------------------------

    def load_entrypoints(self, *, strict: bool = False) -> None:
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
        self._cache.clear()

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        self._cache.clear()
        return registered

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        removed = super().unregister(plugin, name)
        self._cache.clear()
        return removed

    def distribution_of(self, plugin_name: str) -> str | None:
        """The distribution that installed plugin ``plugin_name`` (None for built-ins)."""
        return self._distributions.get(plugin_name)

    # -- registries --------------------------------------------------------------------------------

    def _collect(self, hook_name: str, kind: type[T]) -> dict[str, T]:
        with self._lock:
            if hook_name in self._cache:
                return self._cache[hook_name]
            records: dict[str, T] = {}
            hook = getattr(self.hook, hook_name)
            for impl in reversed(hook.get_hookimpls()):  # registration order
                for record in impl.function() or ():
                    if not isinstance(record, kind):
                        raise PluginError(
                            f"plugin {impl.plugin_name!r}: {hook_name}() must return {kind.__name__} "
                            f"records, got {type(record).__name__}"
                        )
                    if record.name in records:
                        other = self._sources[(hook_name, record.name)]
                        raise PluginError(
                            f"{kind.__name__} name {record.name!r} is registered by both plugin "
                            f"{other!r} and plugin {impl.plugin_name!r}; names must be unique"
                        )
                    records[record.name] = record
                    self._sources[(hook_name, record.name)] = impl.plugin_name
            self._cache[hook_name] = records
            return records

    def source_of(self, hook_name: str, name: str) -> str:
        """The plugin name that registered record ``name`` through ``hook_name``."""
        self._collect(hook_name, object)  # type: ignore[arg-type]
        return self._sources[(hook_name, name)]

    def backends(self) -> dict[str, BackendSpec]:
        """Registered backends, highest priority first."""
        found = self._collect("edgecore_backends", BackendSpec)
        return dict(sorted(found.items(), key=lambda item: (-item[1].priority, item[0])))

    def passes(self) -> dict[str, PassSpec]:
        return self._collect("edgecore_passes", PassSpec)

    def benchmarks(self) -> dict[str, ScenarioSpec]:
        return self._collect("edgecore_benchmarks", ScenarioSpec)

    def models(self) -> dict[str, ModelSpec]:
        return self._collect("edgecore_models", ModelSpec)


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
        entrypoints = not _env_flag("EDGECORE_DISABLE_PLUGIN_AUTOLOAD")
    if strict is None:
        strict = _env_flag("EDGECORE_STRICT_PLUGINS")
    if entrypoints:
        pm.load_entrypoints(strict=strict)
    return pm


@functools.cache
def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, built on first use."""
    return build_plugin_manager()
