"""The hooks through which plugins extend edgecore.

Every hook is prefixed ``edgecore_``. Registration hooks return iterables of frozen records from
:mod:`edgecore.specs` (one hook per kind of record); the plugin manager calls them through pluggy
(wrappers and ``tryfirst``/``trylast`` apply), collects the records and raises on duplicate names.
Decision hooks are ``firstresult``: the first non-None answer wins, and core's own default runs last.

Implement a hook in a plugin module with ``@edgecore.hookimpl``::

    from edgecore import hookimpl
    from edgecore.specs import BackendSpec

    @hookimpl
    def edgecore_backends():
        return [BackendSpec(name="mine", factory=MyBackend, priority=10)]

and register the module in your distribution's ``pyproject.toml``::

    [project.entry-points.edgecore]
    mine = "my_package.plugin"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

import pluggy

if TYPE_CHECKING:
    import onnx

    from edgecore.config import EngineConfig
    from edgecore.engine import Engine
    from edgecore.graph import Graph
    from edgecore.optimize import OptimizationConfig, OptimizationReport
    from edgecore.plugins import PluginManager
    from edgecore.specs import (
        BackendSpec,
        BaselineSpec,
        DatasetSpec,
        ModelSpec,
        PassSpec,
        ReporterSpec,
        ScenarioSpec,
    )

PROJECT = "edgecore"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -------------------------------------------------------------------------------------------------
# Registration: what a plugin brings. Called once per plugin manager; results are cached.
# -------------------------------------------------------------------------------------------------


@hookspec
def edgecore_backends() -> Iterable[BackendSpec]:
    """Return the backends this plugin provides.

    Collected from every plugin; a name registered twice raises :class:`~edgecore.errors.PluginError`.
    """


@hookspec
def edgecore_passes() -> Iterable[PassSpec]:
    """Return the optimization passes this plugin provides (collected, names unique)."""


@hookspec
def edgecore_models() -> Iterable[ModelSpec]:
    """Return zoo models this plugin can build (collected, names unique)."""


# -------------------------------------------------------------------------------------------------
# Registration for the benchmark harness (``edgecore bench``): one hook per kind of record.
# -------------------------------------------------------------------------------------------------


@hookspec
def edgecore_bench_scenarios() -> Iterable[ScenarioSpec]:
    """Return benchmark scenarios: ``runner(context) -> result`` (collected, names unique)."""


@hookspec
def edgecore_bench_reporters() -> Iterable[ReporterSpec]:
    """Return benchmark reporters: ``write(report, destination)`` (collected, names unique)."""


@hookspec
def edgecore_bench_baselines() -> Iterable[BaselineSpec]:
    """Return the raw runtime behind each of this plugin's backends, for ``--baseline``: one record
    per backend, named after it (collected, names unique)."""


@hookspec
def edgecore_bench_datasets() -> Iterable[DatasetSpec]:
    """Return labelled data sets for the accuracy scenario, named after the model each labels
    (collected, names unique)."""


# -------------------------------------------------------------------------------------------------
# Decisions: who handles this? Stop at the first non-None answer.
# -------------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def edgecore_select_backend(
    graph: Graph, candidates: Sequence[BackendSpec], config: EngineConfig
) -> BackendSpec | None:
    """Pick the backend for ``graph`` among available ``candidates`` (sorted best first).

    Stops at the first non-None result. Core's default (``trylast``) takes the highest-priority
    candidate that supports every operator of the graph.
    """


@hookspec(firstresult=True)
def edgecore_resolve_model(source: str, plugin_manager: PluginManager) -> onnx.ModelProto | None:
    """Turn a model name such as ``"zoo:resnet50"`` into an ``onnx.ModelProto``, or None if the
    name is not this plugin's.

    Stops at the first non-None result. ``plugin_manager`` is the manager that asked: resolve
    through it (its ``models()``), not through the process-wide one. The built-in zoo answers
    ``zoo:NAME``.
    """


@hookspec(firstresult=True)
def edgecore_optimize(
    graph: Graph,
    config: OptimizationConfig | None,
    backend: str,
    engine_config: EngineConfig,
    plugin_manager: PluginManager,
) -> tuple[Graph, OptimizationReport] | None:
    """Optimize ``graph`` for ``backend`` (what ``Engine.optimize`` asks): return the optimized graph
    and the report, or None to leave it to the next implementation.

    Stops at the first non-None result. Core's optimizer (:mod:`edgecore.optimize.plugin`,
    ``trylast``) checks each pass on samples compiled with ``engine_config`` through
    ``plugin_manager``. The engine reaches the optimizer only through this hook: the engine (layer 7)
    never imports :mod:`edgecore.optimize` (layer 8).
    """


# -------------------------------------------------------------------------------------------------
# Notifications: engine life. Every implementation is called; results are ignored.
# -------------------------------------------------------------------------------------------------


@hookspec
def edgecore_engine_started(engine: Engine) -> None:
    """Called after an engine has loaded and compiled its model (exporters, metrics)."""


@hookspec
def edgecore_engine_closed(engine: Engine) -> None:
    """Called once when an engine closes, after its last request was answered."""


# -------------------------------------------------------------------------------------------------
# Command line: subcommands from other distributions (``edgecore serve`` from edgecore-serve).
# -------------------------------------------------------------------------------------------------


@hookspec
def edgecore_cli_commands(subparsers: Any) -> None:
    """Add subcommands to the ``edgecore`` CLI: call ``subparsers.add_parser(...)`` and set
    ``func(args) -> int`` as a default. Every implementation is called; results are ignored.
    Import heavy modules inside ``func``, not here: ``edgecore --help`` calls this hook.
    """
