"""What scenario runners work with: the model, the engine, the raw runtime, inputs, timing tools.

:class:`BenchSession` holds what every scenario of one run shares, created on first use (a cold-start
only run never loads the model in this process). :class:`ScenarioContext` is what one scenario's
runner receives: the session's pieces plus its batch size, settings and progress reporting.

Concurrency: a session belongs to the thread that runs the benchmark. Its worker pools (one per
side, ``settings.concurrency`` threads) run requests for concurrent scenarios when the engine has no
scheduler of its own (``Engine.submit``), and always for the raw runtime.
"""

from __future__ import annotations

import functools
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from edgecore.selection import load_graph
from edgecore.bench import loops, registry
from edgecore.bench.results import Measured, ScenarioResult, baseline_from
from edgecore.bench.settings import BenchSettings

if TYPE_CHECKING:
    from edgecore.config import EngineConfig
    from edgecore.engine import Engine
    from edgecore.graph import Graph, ModelSource
    from edgecore.plugins import PluginManager

logger = logging.getLogger(__name__)

__all__ = ["BenchSession", "ScenarioContext", "Progress"]

#: ``progress(scenario, fraction done in [0, 1], detail)``
Progress = Callable[[str, float, str], None]


def _no_progress(scenario: str, fraction: float, detail: str) -> None:
    return None


class BenchSession:
    """The model, engine, raw-runtime session, inputs and worker pools shared by one run."""

    def __init__(
        self,
        source: ModelSource,
        *,
        config: EngineConfig,
        settings: BenchSettings,
        plugin_manager: PluginManager,
        progress: Progress | None = None,
    ) -> None:
        self.source = source
        self.config = config
        self.settings = settings
        self.plugin_manager = plugin_manager
        self.progress = progress or _no_progress
        self._feeds: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self.backend_name: str | None = None  # known once a scenario loaded or ran the model
        self.optimization: dict[str, Any] | None = None  # Engine.optimize's report, with settings.optimize

    @functools.cached_property
    def graph(self) -> Graph:
        from edgecore.graph import Graph

        return load_graph(self.source, self.plugin_manager)

    @functools.cached_property
    def engine(self) -> Engine:
        from edgecore.engine import Engine

        engine = Engine(self.config, plugin_manager=self.plugin_manager).load(self.graph)
        self.backend_name = engine.backend
        fields = self.settings.optimization()
        if fields is not None:
            from edgecore.optimize import OptimizationConfig

            self.optimization = engine.optimize(OptimizationConfig(**fields)).to_json()
        return engine

    @functools.cached_property
    def raw(self) -> registry.RawSession:
        """The raw runtime's session for the original model, compiled with the engine's settings."""
        spec = registry.get_baseline(self.plugin_manager, self.engine.backend)
        raw = spec.session(self.graph, self.config.compile_options())
        if not isinstance(raw, registry.RawSession):
            raise TypeError(f"baseline {self.engine.backend!r} must return a RawSession, got {type(raw).__name__}")
        return raw

    def feeds(self, batch: int) -> dict[str, np.ndarray]:
        """Random inputs of batch size ``batch`` (made once per batch size, seeded)."""
        key = (batch, self.settings.sequence)
        if key not in self._feeds:
            from edgecore.inputs import random_feeds

            self._feeds[key] = random_feeds(
                self.graph.inputs, batch=batch, seed=self.settings.seed, sequence=self.settings.sequence
            )
        return self._feeds[key]

    def _pool(self, name: str) -> ThreadPoolExecutor:
        if name not in self._pools:
            self._pools[name] = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix=f"bench-{name}")
        return self._pools[name]

    def sides(self, *, baseline: bool) -> list[loops.Side]:
        """Edgecore's side, and the raw runtime's when ``baseline``."""
        engine = self.engine
        submit = getattr(engine, "submit", None)
        if submit is None:
            pool = self._pool("edgecore")
            run = engine.run

            def submit(feeds: Mapping[str, np.ndarray]) -> Future:
                return pool.submit(run, feeds)

        sides = [loops.Side(name="edgecore", run=engine.run, submit=submit, runtime="edgecore", version=_version())]
        if baseline:
            raw = self.raw
            raw_pool = self._pool("raw")
            sides.append(
                loops.Side(
                    name="raw",
                    run=raw.run,
                    submit=functools.partial(raw_pool.submit, raw.run),
                    runtime=raw.runtime,
                    version=raw.version,
                )
            )
        return sides

    def scheduler(self) -> str:
        """How concurrent scenarios reach edgecore: its scheduler, or worker threads calling run."""
        if "engine" in self.__dict__ and hasattr(self.engine, "submit"):
            return "Engine.submit (edgecore's scheduler)"
        return f"Engine.run from {self.settings.concurrency} worker threads"

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        self._pools.clear()
        if "raw" in self.__dict__:
            try:
                self.raw.close()
            except Exception as exc:  # closing a baseline must not hide the results
                logger.warning("closing the raw baseline session failed: %r", exc)
        if "engine" in self.__dict__:
            self.engine.close()


def _version() -> str:
    from edgecore import __version__

    return __version__


class ScenarioContext:
    """What a scenario runner receives.

    Pieces: ``engine``, ``graph``, ``source``, ``config``, ``plugin_manager``, ``settings``,
    ``batch`` (this run's batch size), ``name``, ``baseline`` (whether to measure the raw runtime
    too) and ``raw`` (its :class:`~edgecore.bench.registry.RawSession`).

    Tools: :meth:`feeds`, :meth:`sides`, :meth:`measure` (interleaved blocks, see
    :mod:`edgecore.bench.loops`), :meth:`result` (a :class:`ScenarioResult` with the baseline and
    ratios filled in) and :meth:`progress`.
    """

    def __init__(self, session: BenchSession, name: str, *, batch: int, description: str = "") -> None:
        self.session = session
        self.name = name
        self.batch = batch
        self.description = description
        self.settings = session.settings
        self.source = session.source
        self.config = session.config
        self.plugin_manager = session.plugin_manager

    @property
    def engine(self) -> Engine:
        return self.session.engine

    @property
    def graph(self) -> Graph:
        return self.session.graph

    @property
    def baseline(self) -> bool:
        return self.settings.baseline

    @property
    def raw(self) -> registry.RawSession:
        return self.session.raw

    def feeds(self, batch: int | None = None) -> dict[str, np.ndarray]:
        return self.session.feeds(self.batch if batch is None else batch)

    def sides(self) -> list[loops.Side]:
        return self.session.sides(baseline=self.baseline)

    def progress(self, fraction: float, detail: str = "") -> None:
        self.session.progress(self.name, max(0.0, min(1.0, fraction)), detail)

    def warm_up(self, feeds: Mapping[str, np.ndarray] | None = None, *, concurrent: bool = False) -> list[float]:
        """``settings.warmup`` unmeasured queries per side (and as many through ``submit`` from every
        worker when ``concurrent``); return edgecore's warm-up latencies (ms)."""
        self.progress(0.0, "warm-up")
        feeds = feeds if feeds is not None else self.feeds()
        workers = self.settings.concurrency if concurrent else 0
        return loops.warm_up(self.sides(), feeds, self.settings.warmup, concurrent=workers)

    def measure(
        self,
        block: loops.BlockFn,
        *,
        samples_per_query: int | None = None,
        chunk: int | None = None,
        settings: BenchSettings | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> dict[str, Measured]:
        """Run ``block`` on every side until the settings are met; figures by side name."""
        return loops.measure(
            self.sides(),
            block,
            settings or self.settings,
            samples_per_query=self.batch if samples_per_query is None else samples_per_query,
            chunk=chunk,
            progress=progress or (lambda f: self.progress(f, "measuring")),
        )

    def result(
        self,
        measured: Mapping[str, Measured],
        *,
        metrics: Mapping[str, Any] | None = None,
        raw_metrics: Mapping[str, Any] | None = None,
        raw_runtime: tuple[str, str] | None = None,
    ) -> ScenarioResult:
        """The result of this run from :meth:`measure`'s figures (and the baseline's, if measured).

        ``raw_runtime`` (name, version) names the raw runtime when this process has no session of it
        (cold start measures it in child processes).
        """
        ours = measured["edgecore"]
        result = ScenarioResult.from_measured(self.name, ours, batch=self.batch, metrics=metrics)
        raw = measured.get("raw")
        if raw is None:
            return _described(result, self.description)
        runtime, version = raw_runtime or (self.session.raw.runtime, self.session.raw.version)
        baseline = baseline_from(ours, raw, runtime=runtime, version=version, metrics=raw_metrics)
        return _described(result, self.description, baseline=baseline)


def _described(result: ScenarioResult, description: str, **changes: Any) -> ScenarioResult:
    import attrs

    return attrs.evolve(result, description=result.description or description, **changes)
