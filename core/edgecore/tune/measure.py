"""Measuring candidates with the harness's loops: interleaved groups against the current best.

Candidates are measured in groups of a few, each group holding the *anchor* (the best so far) and
measured with :func:`edgecore.bench.loops.measure`: the group's engines alternate in blocks, the
first queries after each switch dropped (a runtime's spinning threads would tax whatever runs
next). A candidate's *score* is its figure relative to the anchor's in the same group, so groups
measured at different moments (a machine that got busier) still rank fairly.

Each group's measurement is bracketed by :class:`~edgecore.bench.machine.LoadMonitor` readings; a
group measured while other processes took CPU or steal was high is measured again (up to
``repeats`` times) and the record says whether the figures it kept were quiet.

Concurrency: everything here runs in the tuning thread; the load monitor samples from its own thread.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import attrs
import numpy as np

from edgecore.bench import loops
from edgecore.bench.results import Measured
from edgecore.bench.settings import BenchSettings
from edgecore.errors import EdgecoreError
from edgecore.tune.space import Candidate

if TYPE_CHECKING:
    from edgecore.bench.machine import LoadMonitor
    from edgecore.config import EngineConfig
    from edgecore.engine import Engine
    from edgecore.plugins import PluginManager

logger = logging.getLogger(__name__)

__all__ = ["Engines", "Figures", "measure_group", "score"]


@attrs.frozen(kw_only=True)
class Figures:
    """One candidate's figures from one group: latency (ms per query), throughput, relative score
    (1.0 = as good as the anchor; below 1 is better), and whether the machine was quiet."""

    p50_ms: float | None
    p99_ms: float | None
    samples_per_s: float | None
    queries: int
    samples: int
    elapsed_s: float
    relative: float
    quiet: bool
    latencies_ms: np.ndarray = attrs.field(eq=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in attrs.asdict(self).items() if k != "latencies_ms"}


def score(measured: Measured, objective: str) -> float:
    """Lower is better: p50 latency (ms) for latency, seconds per sample for throughput."""
    if objective == "throughput":
        rate = measured.samples_per_s
        return 1.0 / rate if rate else math.inf
    if measured.failures:
        return math.inf
    latency = measured.latency
    return latency.p50 if latency is not None else math.inf


class Engines:
    """Compiled engines by :attr:`Candidate.engine_key`, at most ``limit`` held at once (the
    least recently used is closed). ``model_for(candidate)`` gives the model source to load."""

    def __init__(self, model_for: Callable[[Candidate], Any], base: EngineConfig, plugin_manager: PluginManager,
                 *, limit: int = 4) -> None:
        self._model_for = model_for
        self._base = base
        self._pm = plugin_manager
        self._limit = limit
        self._held: dict[tuple, Engine] = {}

    def get(self, candidate: Candidate, keep: Sequence[Candidate] = ()) -> Engine:
        from edgecore.engine import Engine

        key = candidate.engine_key
        engine = self._held.pop(key, None)
        if engine is None:
            protected = {c.engine_key for c in keep}
            while len(self._held) >= self._limit:
                victim = next((k for k in self._held if k not in protected), None)
                if victim is None:
                    break
                self._held.pop(victim).close()
            engine = Engine(candidate.engine_config(self._base), plugin_manager=self._pm)
            try:
                engine.load(self._model_for(candidate))
            except BaseException:
                engine.close()
                raise
        self._held[key] = engine  # most recently used last
        return engine

    def close(self) -> None:
        for engine in self._held.values():
            try:
                engine.close()
            except Exception:  # closing must not hide the results
                logger.exception("closing a tuning engine failed")
        self._held.clear()


def _run_now(run: Callable[[Any], Any]) -> Callable[[Any], Future]:
    def submit(feeds: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(run(feeds))
        except Exception as exc:
            future.set_exception(exc)
        return future

    return submit


def measure_group(
    group: Sequence[Candidate],
    engines: Engines,
    feeds_for: Callable[[int], Mapping[str, np.ndarray]],
    settings: BenchSettings,
    monitor: LoadMonitor,
    *,
    objective: str,
    repeats: int = 1,
    on_failure: Callable[[Candidate, str], None],
) -> dict[str, Figures]:
    """Measure ``group`` interleaved (``group[0]`` is the anchor); figures by candidate key.

    A candidate whose engine fails to compile or run is reported through ``on_failure`` and left out;
    without its anchor a group's scores are relative to its first candidate that ran.
    """
    sides, feeds, by_key = [], {}, {}
    for candidate in group:
        try:
            engine = engines.get(candidate, keep=group)
            batch_feeds = feeds_for(candidate.batch)
            engine.run(batch_feeds)
        except Exception as exc:  # a backend that cannot compile or run it: rejected, the search goes on
            on_failure(candidate, str(exc) if isinstance(exc, EdgecoreError) else f"{type(exc).__name__}: {exc}")
            continue
        feeds[candidate.key] = batch_feeds
        by_key[candidate.key] = candidate
        submit = engine.submit if candidate.instances > 1 else _run_now(engine.run)
        sides.append(loops.Side(name=candidate.key, run=engine.run, submit=submit))
    if not sides:
        return {}

    def block(side: loops.Side, n: int) -> loops.Block:
        # each side runs a block of about the same time (its own length), so that a fast side does not
        # wait for the slow ones through hundreds of switches; the driver drops the first queries
        n = sizes[side.name] + (n - settings.block_size)
        streams = by_key[side.name].instances
        if streams > 1:  # instances answer queries side by side: keep that many in flight
            return loops.concurrent(feeds[side.name], streams)(side, n)
        return _sequential_capped(side, feeds[side.name], n, cap_ns)

    measured: dict[str, Measured] = {}
    quiet = False
    settings, sizes = _blocks_for(sides, feeds, settings)
    cap_ns = int(settings.duration_s / 3 * 2 * 1e9)  # a block that runs slower than it sized itself stops early
    attempt = 0
    while attempt <= repeats:
        for side in sides:  # warm-up, unmeasured
            for _ in range(settings.warmup):
                side.run(feeds[side.name])
        monitor.sample()  # closes the window of the warm-up; the measurement's own windows follow
        since = monitor.windows
        try:
            measured = {name: _with_samples(m, by_key[name].samples_per_query)
                        for name, m in loops.measure(sides, block, settings).items()}
        except Exception as exc:  # a runtime failed mid-measurement: drop it, measure the rest again
            failed = [s for s in sides if not _runs(s, feeds[s.name])] or sides
            for side in failed:
                on_failure(by_key[side.name], str(exc) if isinstance(exc, EdgecoreError)
                           else f"{type(exc).__name__}: {exc}")
            sides = [s for s in sides if s not in failed]
            if not sides:
                return {}
            continue
        monitor.sample()
        # this group's own windows decide: a machine busy when the search began may have calmed down
        quiet = not monitor.summary(since=since)["during"]["busy_windows"]
        if quiet:
            break
        if attempt < repeats:
            logger.info("tune: the machine was busy while measuring %s; measuring again", [s.name for s in sides])
        attempt += 1
    anchor = score(measured[sides[0].name], objective)
    out = {}
    for side in sides:
        m = measured[side.name]
        latency = m.latency
        out[side.name] = Figures(
            p50_ms=latency.p50 if latency else None, p99_ms=latency.p99 if latency else None,
            samples_per_s=m.samples_per_s, queries=m.queries, samples=m.samples, elapsed_s=m.elapsed_s,
            relative=score(m, objective) / anchor if anchor and math.isfinite(anchor) else math.inf,
            quiet=quiet, latencies_ms=m.latencies_ms,
        )
    return out


def _blocks_for(sides: Sequence[loops.Side], feeds: Mapping[str, Mapping[str, np.ndarray]],
                settings: BenchSettings) -> tuple[BenchSettings, dict[str, int]]:
    """Block lengths by side: each about a third of ``settings.duration_s`` long (at least 3 kept
    queries, at most 5000), so that every side alternates with the others about three times or more
    whatever its speed; the queries dropped after a switch are about a sixth of the shortest block."""
    import time

    sizes = {}
    wanted = settings.duration_s / 3
    for side in sides:
        took = []
        for _ in range(3):
            started = time.perf_counter()
            side.run(feeds[side.name])
            took.append(time.perf_counter() - started)
        sizes[side.name] = int(min(5000, max(3, wanted / max(float(np.median(took)), 1e-7))))
    shortest = min(sizes.values())
    drop = min(settings.block_drop, max(1, shortest // 6))
    kept = attrs.evolve(settings, block_size=shortest, block_drop=drop,
                        min_queries=min(settings.min_queries, 3 * shortest))
    return kept, sizes


def _sequential_capped(side: loops.Side, feeds: Mapping[str, np.ndarray], n: int, cap_ns: int) -> loops.Block:
    """:func:`edgecore.bench.loops.sequential`, stopped after ``cap_ns`` (a runtime whose mean is far
    above the median it showed when the block was sized, e.g. spinning threads on a busy machine)."""
    import time

    clock, run = time.perf_counter_ns, side.run
    starts = np.empty(n, dtype=np.int64)
    ends = np.empty(n, dtype=np.int64)
    done, first = 0, clock()
    for i in range(n):
        starts[i] = clock()
        run(feeds)
        ends[i] = clock()
        done = i + 1
        if ends[i] - first > cap_ns and done >= 3:
            break
    return loops.Block(starts=starts[:done], ends=ends[:done])


def _with_samples(measured: Measured, per_query: int) -> Measured:
    """``measured`` with each kept query counted as ``per_query`` samples (batch × streams)."""
    return attrs.evolve(measured, samples=measured.queries * per_query)


def _runs(side: loops.Side, feeds: Mapping[str, np.ndarray]) -> bool:
    try:
        side.run(feeds)
        return True
    except Exception:
        return False
