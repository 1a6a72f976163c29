"""Sample inputs, and running a graph on them: what every pass is checked on.

:class:`SampleSet` holds the feeds passes are checked on (and int8 calibrates on): the caller's
calibration data, or inputs generated from the model's input specs (:func:`edgecore.inputs.random_feeds`,
the generator the CLI and the benchmarks use too). :class:`Evaluator` runs a
:class:`~edgecore.graph.Graph` on them and returns one array per output with the samples along
axis 0: through a backend plugin, chosen and compiled exactly as an :class:`~edgecore.Engine` does
(:func:`edgecore.selection.candidate_backends`, ``CompileOptions.from_config`` of the engine's
config with a memory pool of the same settings) but without building an engine -- no engine hooks
fire and no metrics see it -- or, with ``onnx_reference=True``, through ``onnx.reference`` (not a
backend: ``backend="reference"`` is whatever backend plugin registers that name).

Concurrency: an Evaluator belongs to the thread that optimizes; it compiles one model at a time and
closes it before returning.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import attrs
import numpy as np

from edgecore.backend import CompiledModel, CompileOptions
from edgecore.errors import InvalidInputError, OptimizationError
from edgecore.graph import Graph
from edgecore.inputs import random_feeds
from edgecore.tensor import TensorSpec

if TYPE_CHECKING:
    from edgecore.config import EngineConfig
    from edgecore.optimize.config import CalibrationData, OptimizationConfig
    from edgecore.plugins import PluginManager
    from edgecore.specs import BackendSpec

logger = logging.getLogger(__name__)

__all__ = ["SampleSet", "Evaluator", "ONNX_REFERENCE"]

#: What reports call core's own ``onnx.reference`` evaluator (``onnx_reference=True``); not a backend.
ONNX_REFERENCE = "onnx.reference"

#: Samples run together in one call when the batch dimension is symbolic.
EVAL_BATCH = 16


def _batch_symbolic(spec: TensorSpec) -> bool:
    return bool(spec.shape) and not isinstance(spec.shape[0], int)


@attrs.frozen(kw_only=True)
class SampleSet:
    """Feeds to check passes on: each a complete request; ``rows`` samples in all."""

    feeds: tuple[Mapping[str, np.ndarray], ...]
    rows: int
    labels: np.ndarray | None = attrs.field(default=None, eq=False)
    generated: bool = False
    description: str = ""

    @classmethod
    def from_config(cls, config: OptimizationConfig, specs: Sequence[TensorSpec]) -> SampleSet:
        """The config's calibration data, or ``num_samples`` generated inputs."""
        if config.calibration_data is None:
            samples = cls.generate(specs, count=config.num_samples, seed=config.seed, sequence=config.sequence_length)
            if config.labels is not None:
                raise OptimizationError("OptimizationConfig.labels were given without calibration_data to label")
            return samples
        return cls.from_data(config.calibration_data, specs, labels=config.labels)

    @classmethod
    def from_data(
        cls, data: CalibrationData, specs: Sequence[TensorSpec], *, labels: np.ndarray | None = None
    ) -> SampleSet:
        """Split caller data into feeds.

        A mapping gives each input's samples along axis 0: with a symbolic batch dimension they are
        kept as batches of up to 16, else every row (with its own batch axis added back when the
        model's rank asks for it) is one feed. A sequence of mappings is taken feed by feed.
        """
        names = [s.name for s in specs]
        if isinstance(data, Mapping):
            missing = [n for n in names if n not in data]
            if missing:
                raise OptimizationError(f"calibration data lacks input(s) {missing}; the model takes {names}")
            arrays = {s.name: _as_input(data[s.name], s) for s in specs}
            counts = {n: a.shape[0] if a.ndim else 1 for n, a in arrays.items()}
            if len(set(counts.values())) != 1:
                raise OptimizationError(f"calibration inputs hold different sample counts: {counts}")
            rows = next(iter(counts.values()))
            feeds = list(_split(arrays, specs, rows))
        else:
            feeds = []
            for i, feed in enumerate(data):
                missing = [n for n in names if n not in feed]
                if missing:
                    raise OptimizationError(f"calibration feed {i} lacks input(s) {missing}; the model takes {names}")
                feeds.append({s.name: _as_input(feed[s.name], s) for s in specs})
            rows = sum(_rows(f, specs) for f in feeds)
        if not feeds or rows == 0:
            raise OptimizationError("calibration data holds no samples")
        if labels is not None and len(labels) != rows:
            raise OptimizationError(f"{len(labels)} labels for {rows} calibration samples")
        described = f"{rows} calibration sample(s)" + (" with labels" if labels is not None else "")
        return cls(feeds=tuple(feeds), rows=rows, labels=labels, description=described)

    @classmethod
    def generate(cls, specs: Sequence[TensorSpec], *, count: int, seed: int = 0, sequence: int = 32) -> SampleSet:
        """``count`` random samples from :func:`edgecore.inputs.random_feeds` (its rules: standard
        normal floats, masks of ones, token types of zeros, ids below 100).

        The first symbolic dimension is the batch; other symbolic dimensions take ``sequence``.
        """
        rng = np.random.default_rng(seed)
        batched = all(_batch_symbolic(s) for s in specs)
        per_feed = min(count, EVAL_BATCH) if batched else 1
        feeds = []
        left = count
        while left > 0:
            n = min(per_feed, left)
            try:
                feeds.append(random_feeds(specs, batch=n, sequence=sequence, rng=rng))
            except InvalidInputError as exc:
                raise OptimizationError(f"{exc}: pass calibration data (--calib)") from exc
            left -= n
        return cls(
            feeds=tuple(feeds),
            rows=count,
            generated=True,
            description=f"{count} generated sample(s) (no calibration data given)",
        )

    def head(self, rows: int) -> SampleSet:
        """The first ``rows`` samples (whole feeds, the last one cut where it is a batch)."""
        feeds, left = [], rows
        for feed in self.feeds:
            if left <= 0:
                break
            n = next(iter(feed.values())).shape[0] if feed and next(iter(feed.values())).ndim else 1
            if n > left and all(v.ndim and v.shape[0] == n for v in feed.values()):
                feed, n = {k: v[:left] for k, v in feed.items()}, left
            feeds.append(feed)
            left -= n
        labels = None if self.labels is None else self.labels[: rows - max(left, 0)]
        return attrs.evolve(self, feeds=tuple(feeds), rows=rows - max(left, 0), labels=labels)

    def __iter__(self) -> Iterator[Mapping[str, np.ndarray]]:
        return iter(self.feeds)

    def single_rows(self) -> Iterator[dict[str, np.ndarray]]:
        """Every sample as its own feed (batch 1 where the batch is symbolic), for calibration."""
        for feed in self.feeds:
            n = next(iter(feed.values())).shape[0] if feed else 1
            if n == 1:
                yield dict(feed)
                continue
            for i in range(n):
                yield {k: v[i : i + 1] for k, v in feed.items()}


def _as_input(value: Any, spec: TensorSpec) -> np.ndarray:
    array = np.asarray(value)
    want = spec.dtype.numpy
    if array.dtype != want:
        if array.dtype.kind != want.kind and not (array.dtype.kind in "iu" and want.kind in "iu"):
            raise OptimizationError(f"calibration input {spec.name!r} is {array.dtype}, the model takes {want}")
        array = array.astype(want)
    return array


def _rows(feed: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> int:
    spec = specs[0]
    array = feed[spec.name]
    return int(array.shape[0]) if _batch_symbolic(spec) and array.ndim else 1


def _split(arrays: dict[str, np.ndarray], specs: Sequence[TensorSpec], rows: int) -> Iterator[dict[str, np.ndarray]]:
    batched = all(_batch_symbolic(s) for s in specs)
    if batched and all(a.ndim == len(s.shape) for s, a in zip(specs, arrays.values())):
        for start in range(0, rows, EVAL_BATCH):
            yield {n: np.ascontiguousarray(a[start : start + EVAL_BATCH]) for n, a in arrays.items()}
        return
    for i in range(rows):
        feed = {}
        for spec in specs:
            row = arrays[spec.name][i]
            if spec.rank is not None and row.ndim + 1 == spec.rank:
                row = row[None]
            if spec.rank is not None and row.ndim != spec.rank:
                raise OptimizationError(
                    f"calibration input {spec.name!r}: samples of shape {list(row.shape)} do not fit "
                    f"the input ({spec.describe()})"
                )
            feed[spec.name] = np.ascontiguousarray(row)
        yield feed


class Evaluator:
    """Runs graphs on one :class:`SampleSet` through a backend plugin, or ``onnx.reference``.

    ``backend``: ``"auto"`` (the backend an engine with ``engine_config`` would pick, fallbacks
    included) or a backend name; :attr:`backend` holds the one in use after the first run.
    ``engine_config``: the settings the backend compiles with, as the engine serving the result
    would (pool, threads, custom options); profiling and batching do not apply to a check.
    """

    def __init__(
        self,
        samples: SampleSet,
        *,
        backend: str = "auto",
        engine_config: EngineConfig | None = None,
        plugin_manager: PluginManager | None = None,
        onnx_reference: bool = False,
    ) -> None:
        self.samples = samples
        self.requested = backend
        self.onnx_reference = onnx_reference
        self.backend = ONNX_REFERENCE if onnx_reference else (backend if backend != "auto" else "")
        self._engine_config = engine_config
        self._pm = plugin_manager
        self._spec: BackendSpec | None = None
        self._pool: Any = None
        self.runs = 0

    def with_samples(self, samples: SampleSet) -> Evaluator:
        """An evaluator with the same backend and settings on other samples."""
        other = Evaluator(samples, backend=self.requested, engine_config=self._engine_config, plugin_manager=self._pm,
                          onnx_reference=self.onnx_reference)
        other._spec, other.backend, other._pool = self._spec, self.backend, self._pool
        return other

    def outputs(self, graph: Graph) -> list[np.ndarray]:
        """Each output of ``graph`` on every sample, samples along axis 0."""
        self.runs += 1
        if self.onnx_reference:
            return self._reference(graph)
        names = [s.name for s in graph.outputs]
        compiled = self._compile(graph)
        try:
            return _gather([compiled.run(dict(feed)) for feed in self.samples], names)
        finally:
            compiled.close()

    def _plugin_manager(self) -> PluginManager:
        if self._pm is None:
            from edgecore.plugins import get_plugin_manager

            self._pm = get_plugin_manager()
        return self._pm

    def _config(self) -> EngineConfig:
        from edgecore.config import EngineConfig

        config = self._engine_config or EngineConfig(backend=self.requested)
        changes: dict[str, Any] = {"profile_ops": False, "enable_dynamic_batching": False}
        if self.requested != "auto" and config.backend != self.requested:
            changes["backend"] = self.requested
        return attrs.evolve(config, **{k: v for k, v in changes.items() if hasattr(config, k)})

    def _options(self, config: EngineConfig) -> CompileOptions:
        """The options each of the serving engine's instances is compiled with."""
        if self._pool is None and config.enable_memory_pool:
            from edgecore.memory import MemoryPool

            self._pool = MemoryPool(
                alignment=config.memory_alignment, max_memory_usage=config.max_memory_usage, pool_size=config.pool_size
            )
        return config.instance_options(self._pool)

    def _compile(self, graph: Graph) -> CompiledModel:
        """``graph`` compiled on the chosen backend; the first call chooses it as an engine does."""
        from edgecore.selection import candidate_backends, compile_first, compile_on

        config, pm = self._config(), self._plugin_manager()
        if self._spec is not None:
            return compile_on(self._spec, graph, self._options(config), pm)
        candidates = candidate_backends(graph, config, pm)
        spec, compiled, _ = compile_first(candidates, lambda spec: compile_on(spec, graph, self._options(config), pm))
        self._spec, self.backend = spec, spec.name
        return compiled

    def _reference(self, graph: Graph) -> list[np.ndarray]:
        from onnx.reference import ReferenceEvaluator

        session = ReferenceEvaluator(graph.to_proto())
        names = [s.name for s in graph.outputs]
        results = []
        for feed in self.samples:
            values = session.run(None, dict(feed))
            results.append(dict(zip(names, values)))
        return _gather(results, names)


def _gather(results: list[Mapping[str, np.ndarray]], names: Sequence[str]) -> list[np.ndarray]:
    gathered = []
    for name in names:
        parts = [np.asarray(r[name]) for r in results]
        if len(parts) == 1:
            gathered.append(parts[0])
        elif all(p.ndim for p in parts):
            gathered.append(np.concatenate(parts, axis=0))
        else:
            gathered.append(np.stack(parts))
    return gathered
