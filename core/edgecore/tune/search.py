"""The search of ``edgecore tune``: prune cheaply, build each precision once, successive halving, finalists.

Phases, each bounded by a share of the time limit (what a phase leaves unused goes to the next):

1. *Prune* (no measurement): backends that are unavailable, lack operators or are reference
   evaluators; precisions the hardware lacks (:mod:`edgecore.tune.space`).
2. *Build* (up to 35 % of the limit): the int8/fp16 models through the pass manager, the bf16 hint
   checked on the calibration samples (:mod:`edgecore.tune.artifacts`); a lossy step over the
   accuracy budget rejects its candidates for accuracy with the manager's reason.
3. *Halving* (up to 70 %): every candidate is measured interleaved against the anchor (the best so
   far; at first the default configuration of the best backend), ranked by its figure relative to
   the anchor's in the same group; the better half goes on to a round twice as long, until
   ``finalists`` are left. A p99 over the latency budget rejects a candidate; candidates the time
   limit leaves unmeasured are rejected with that reason.
4. *Finalists*: memory by PSS in a fresh process (:mod:`edgecore.tune.memory`), in rank order; one
   over the memory budget is rejected and the next is read.
5. *Final*: the chosen candidate re-measured interleaved against every backend's default
   configuration; a default that beats it within the budgets is chosen instead.

Everything a rerun can reuse (built models, memory readings, halving eliminations; not compile
failures, which a rerun tries again) is kept in the tuning cache under the model's fingerprint (:class:`~edgecore.tune.artifacts.TuneCache`).

Concurrency: one thread runs the whole search; the load monitor samples only when asked.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

import attrs

from edgecore.errors import EdgecoreError
from edgecore.tune.settings import TuneSettings
from edgecore.tune.space import Candidate, Rejection

if TYPE_CHECKING:
    import numpy as np

    from edgecore.graph import Graph
    from edgecore.plugins import PluginManager
    from edgecore.tune.artifacts import Artifact, TuneCache
    from edgecore.tune.measure import Figures

logger = logging.getLogger(__name__)

__all__ = ["Entry", "SearchOutcome", "search", "Progress"]

#: ``progress(phase, fraction of the time limit spent, detail)``.
Progress = Callable[[str, float, str], None]

BUILD_SHARE, HALVING_SHARE = 0.35, 0.7


@attrs.define
class Entry:
    """One candidate as the search sees it (mutable while the search runs)."""

    candidate: Candidate
    artifact_key: str
    loss: float | None
    metric: str
    figures: Figures | None = None
    rounds: int = 0
    memory_mb: float | None = None
    status: str = "candidate"  # candidate, finalist, chosen, default, rejected
    stage: str = ""
    reason: str = ""

    def reject(self, stage: str, reason: str) -> None:
        self.status, self.stage, self.reason = "rejected", stage, reason

    def to_json(self) -> dict[str, Any]:
        return {
            **self.candidate.to_json(), "artifact": self.artifact_key, "accuracy_loss": self.loss,
            "metric": self.metric, "figures": self.figures.to_json() if self.figures else None,
            "rounds": self.rounds, "memory_mb": self.memory_mb, "status": self.status, "stage": self.stage,
            "reason": self.reason,
        }


@attrs.frozen(kw_only=True)
class SearchOutcome:
    """What the search found: every entry, the rejections before candidates existed, the chosen entry
    (None when nothing met the budgets), the final comparison's figures by key, artifacts, timings."""

    entries: tuple[Entry, ...] = attrs.field(converter=tuple)
    rejections: tuple[Rejection, ...] = attrs.field(converter=tuple)
    chosen: Entry | None
    final: Mapping[str, Figures]
    artifacts: Mapping[str, Artifact]
    load: Mapping[str, Any]
    seconds: float
    resumed: bool
    notes: tuple[str, ...] = attrs.field(default=(), converter=tuple)


class _Clock:
    def __init__(self, limit_s: float) -> None:
        self.started = time.monotonic()
        self.limit_s = limit_s

    def spent(self) -> float:
        return time.monotonic() - self.started

    def until(self, share: float) -> float:
        """Seconds left before ``share`` of the limit is spent."""
        return self.limit_s * share - self.spent()


def _optimization_config(settings: TuneSettings, calibration: Any, labels: Any):
    from edgecore.optimize import OptimizationConfig

    return OptimizationConfig(
        enable_graph_optimization=True, calibration_data=calibration, labels=labels,
        num_samples=settings.num_samples, sequence_length=settings.sequence, seed=settings.seed,
        accuracy_budget=settings.accuracy_budget, custom_options=settings.pass_options,
    )


def _candidates(backend: str, precision: str, settings: TuneSettings, threads: tuple[int, ...],
                batches: tuple[int, ...], cores: int) -> list[Candidate]:
    modes = ("balanced", "min") if settings.memory_budget is not None else ("balanced",)
    found = []
    for mode in modes:
        for t in threads:
            for b in (batches if settings.objective == "throughput" else (1,)):
                found.append(Candidate(backend=backend, precision=precision, threads=t, batch=b, memory_mode=mode))
        if settings.objective == "throughput" and cores > 1:  # instances share the cores out
            for b in batches:
                found.append(Candidate(backend=backend, precision=precision, threads=0, batch=b, instances=cores,
                                       memory_mode=mode))
    return found


def search(
    graph: Graph,
    model_source: str,
    settings: TuneSettings,
    *,
    calibration: Any,
    labels: np.ndarray | None,
    cache: TuneCache,
    plugin_manager: PluginManager,
    artifact_path: Callable[[Candidate, Artifact], str],
    progress: Progress | None = None,
) -> SearchOutcome:
    """Run the search (see the module docstring). ``artifact_path`` gives the model file a candidate
    loads (the built artifact, or the original model saved once)."""
    from edgecore.bench.machine import LoadMonitor, cpu_flags
    from edgecore.bench.settings import BenchSettings
    from edgecore.inputs import random_feeds
    from edgecore.selection import available_backend
    import edgecore.tune.artifacts as art
    import edgecore.tune.space as space
    from edgecore.tune.measure import Engines, measure_group

    clock = _Clock(settings.time_limit_s)
    tell = progress or (lambda phase, fraction, detail: None)
    notes: list[str] = []
    rejections: list[Rejection] = []

    # 1. prune by cheap signals
    tell("prune", 0.0, "backends and precisions")
    backends, rejected = space.usable_backends(graph, plugin_manager, settings.backends)
    rejections += rejected
    if not backends:
        raise EdgecoreError("edgecore tune: no backend can run this model here: " +
                            "; ".join(f"{r.what}: {r.reason}" for r in rejections))
    _, flags = cpu_flags()
    cores = space.usable_cores()
    threads = settings.threads or space.thread_choices(cores)
    batches = tuple(b for b in space.batch_choices(graph) if not settings.batches or b in settings.batches) or (1,)
    specs = plugin_manager.backends()
    opt_config = _optimization_config(settings, calibration, labels)

    # 2. build each precision once
    artifacts: dict[str, Artifact] = {}
    entries: list[Entry] = []
    for backend in backends:
        kinds = {d.kind for d in available_backend(specs[backend], plugin_manager).devices()} or {"cpu"}
        precisions, rejected = space.precision_rejections(
            backend, kinds, flags, memory_budget=settings.memory_budget is not None, wanted=settings.precisions)
        rejections += rejected
        for precision in precisions:
            what = f"{backend}/{precision}"
            if precision != "fp32" and clock.until(BUILD_SHARE) <= 0:
                rejections.append(Rejection(what=what, stage="build", reason=(
                    f"not built: the build phase's share of the time limit ({BUILD_SHARE:.0%} of "
                    f"{settings.time_limit_s:g} s) was spent; a rerun continues from the cache")))
                continue
            tell("build", clock.spent() / clock.limit_s, what)
            try:
                artifact = art.build_artifact(graph, backend, precision, opt_config, cache, plugin_manager)
            except Exception as exc:  # a pass or backend failure: this precision is out, the rest goes on
                reason = str(exc) if isinstance(exc, EdgecoreError) else f"{type(exc).__name__}: {exc}"
                rejections.append(Rejection(what=what, stage="build", reason=reason))
                continue
            if precision == "bf16" and artifact.loss == 0.0:  # bit-identical: the backend ignores the hint
                rejections.append(Rejection(what=what, stage="precision", reason=(
                    "outputs identical to fp32 on the samples: the backend ignores the bf16 precision hint here")))
                continue
            artifacts[artifact.key] = artifact
            made = [Entry(candidate=c, artifact_key=artifact.key, loss=artifact.loss, metric=artifact.metric)
                    for c in _candidates(backend, precision, settings, threads, batches, cores)]
            if not artifact.kept:
                for entry in made:
                    entry.reject("accuracy", f"{precision} rolled back by the pass manager: {artifact.reason}")
            entries += made

    # 3. successive halving
    by_key = {e.candidate.key: e for e in entries}
    alive = [e for e in entries if e.status != "rejected"]
    previous = cache.get("halving", _halving_key(settings, flags)) or {}
    for entry in list(alive):
        found = previous.get(entry.candidate.key)
        if found and found.get("stage"):
            entry.reject(found["stage"], found["reason"] + " (from an earlier run, kept in the tuning cache)")
            alive.remove(entry)
    if not alive:
        raise EdgecoreError("edgecore tune: every candidate was rejected before measuring: " +
                            "; ".join(sorted({f"{e.candidate.key}: {e.reason}" for e in entries})[:8]))
    alive.sort(key=lambda e: (not e.candidate.is_default, backends.index(e.candidate.backend)))
    anchor = alive[0]

    def feeds_for(batch: int) -> dict:
        return random_feeds(graph.inputs, batch=batch, seed=settings.seed, sequence=settings.sequence)

    def failed(candidate: Candidate, reason: str) -> None:
        entry = by_key[candidate.key]
        # not kept for later runs: a failure can come from this run's surroundings (a runtime being
        # upgraded, a file gone), and a rerun should try again
        entry.reject("compile", f"does not compile or run: {reason}")

    def remember(entry: Entry) -> None:
        previous[entry.candidate.key] = {"stage": entry.stage, "reason": entry.reason}
        cache.put("halving", _halving_key(settings, flags), previous)

    model_for = lambda candidate: artifact_path(candidate, artifacts[by_key[candidate.key].artifact_key])  # noqa: E731
    engines = Engines(model_for, _base_config(), plugin_manager, limit=settings.group_size + 1)
    # the builds above are in the load average: judge the start by a window of others' CPU and steal
    monitor = LoadMonitor().start(sampler=False, wait_s=2.0, wait_interval_s=2.0, judge_load=False)
    round_index = 0
    try:
        while True:
            live = [e for e in alive if e.status != "rejected"]
            if anchor.status == "rejected":
                anchor = live[0] if live else anchor
            if len(live) <= settings.finalists and round_index > 0 or not live:
                alive = live
                break
            left = clock.until(HALVING_SHARE)
            rounds_left = max(1, math.ceil(math.log2(max(2, len(live)) / settings.finalists)) + 1)
            if left <= 0 and round_index > 0:
                alive = live
                break
            per_candidate = max(0.0, left) / rounds_left / max(1, len(live))
            duration = min(10.0, max(0.1, 0.4 * per_candidate))
            bench = BenchSettings(duration_s=duration, min_queries=3, warmup=2, block_size=10, block_drop=2)
            others = [e for e in live if e is not anchor]
            width = max(1, settings.group_size - 1)
            measured: list[Entry] = [anchor]
            round_end = clock.started + clock.limit_s * HALVING_SHARE
            for start in range(0, max(1, len(others)), width):
                group = [anchor] + others[start:start + width]
                if time.monotonic() > round_end and start > 0:
                    for entry in others[start:]:
                        entry.reject("halving", f"not measured in round {round_index + 1}: the halving phase's "
                                     f"share of the time limit was spent")
                    break
                tell("measure", clock.spent() / clock.limit_s,
                     f"round {round_index + 1}: {', '.join(e.candidate.key for e in group)}")
                spare = round_end - time.monotonic() > 3 * 1.5 * duration * len(group)
                figures = measure_group([e.candidate for e in group], engines, feeds_for, bench, monitor,
                                        objective=settings.objective, repeats=settings.repeats if spare else 0,
                                        on_failure=failed)
                for entry in group:
                    if entry.candidate.key in figures:
                        entry.figures, entry.rounds = figures[entry.candidate.key], round_index + 1
                        if entry is not anchor:
                            measured.append(entry)
                if anchor.status == "rejected":  # the anchor itself failed: the first that ran anchors the rest
                    anchor = next((e for e in measured if e.status != "rejected" and e is not anchor), anchor)
            ranked = [e for e in measured if e.status != "rejected" and e.figures is not None]
            ranked.sort(key=lambda e: e.figures.relative if e is not anchor else 1.0)
            for entry in ranked:
                if settings.latency_budget_ms is not None and entry.figures.p99_ms is not None and \
                        entry.figures.p99_ms > settings.latency_budget_ms:
                    entry.reject("latency", f"p99 {entry.figures.p99_ms:.3g} ms over the latency budget "
                                 f"{settings.latency_budget_ms:g} ms (round {round_index + 1})")
                    remember(entry)
            ranked = [e for e in ranked if e.status != "rejected"]
            if not ranked:
                alive = []
                break
            keep = max(settings.finalists, math.ceil(len(ranked) / 2))
            for entry in ranked[keep:]:
                entry.reject("halving", f"round {round_index + 1}: {_relative_text(entry, anchor, settings)}; "
                             f"the best {keep} of {len(ranked)} went on")
                remember(entry)
            alive = ranked[:keep]
            anchor = alive[0]
            round_index += 1
            if len(alive) <= settings.finalists:
                break
            if all(e.figures is not None and e.figures.queries >= 200 for e in alive) and round_index >= 4:
                break
        # 4. finalists: memory in rank order, until one fits the memory budget
        alive = [e for e in alive if e.status != "rejected"]
        for rank, entry in enumerate(alive[settings.finalists:], start=settings.finalists + 1):
            entry.reject("halving", f"ranked {rank} of {len(alive)} when the halving phase's share of the time "
                         f"limit was spent; {settings.finalists} finalists go on")
        alive = alive[:settings.finalists]
        chosen = None
        for entry in alive:
            if entry.status == "rejected":
                continue
            entry.status = "finalist"
            budget = settings.memory_budget
            if chosen is not None and (budget is None and clock.until(1.0) < 0.1 * clock.limit_s):
                continue  # the report's memory column for the rest costs time the limit does not have
            tell("memory", clock.spent() / clock.limit_s, entry.candidate.key)
            try:
                entry.memory_mb = _memory(entry, cache, model_for, settings)
            except EdgecoreError as exc:
                notes.append(f"memory of {entry.candidate.key} not measured: {exc}")
                if budget is not None:
                    entry.reject("memory", f"memory could not be measured against the budget: {exc}")
                    continue
            if budget is not None and entry.memory_mb is not None and entry.memory_mb * 1e6 > budget:
                entry.reject("memory", f"PSS growth {entry.memory_mb:.1f} MB over the memory budget "
                             f"{budget / 1e6:g} MB")
                continue
            if chosen is None:
                chosen = entry
        # 5. final: the chosen one against every backend's default configuration
        final: dict[str, Figures] = {}
        if chosen is not None:
            chosen, final = _final(chosen, entries, by_key, backends, engines, feeds_for, monitor, settings, clock,
                                   failed, cache, model_for, notes, tell)
    finally:
        engines.close()
        load = monitor.stop()
    if chosen is not None:
        chosen.status = "chosen"
    if not load.get("quiet"):
        notes.append("the machine was busy during the search (load recorded in report.json): the figures carry "
                     "other work; rerun on a quiet machine for figures to quote")
    return SearchOutcome(entries=entries, rejections=rejections, chosen=chosen, final=final, artifacts=artifacts,
                         load=load, seconds=clock.spent(), resumed=cache.resumed, notes=notes)


def _final(chosen: Entry, entries: list[Entry], by_key: dict[str, Entry], backends: list[str], engines: Any,
           feeds_for: Callable, monitor: Any, settings: TuneSettings, clock: _Clock, failed: Callable,
           cache: TuneCache, model_for: Callable, notes: list[str],
           tell: Progress) -> tuple[Entry, dict[str, Figures]]:
    from edgecore.bench.settings import BenchSettings
    from edgecore.tune.measure import measure_group

    defaults = []
    for backend in backends:
        entry = next((e for e in entries if e.candidate.backend == backend and e.candidate.is_default), None)
        if entry is not None and entry is not chosen and not (entry.status == "rejected" and entry.stage == "compile"):
            defaults.append(entry)
    group = [chosen] + defaults
    left = max(0.0, clock.until(1.0))
    duration = min(5.0, max(0.3, 0.4 * left / len(group)))
    repeats = settings.repeats if left > 2.5 * duration * len(group) else 0  # no time to measure a busy group again
    tell("final", clock.spent() / clock.limit_s, f"{chosen.candidate.key} against the defaults")
    figures = measure_group([e.candidate for e in group], engines, feeds_for,
                            BenchSettings(duration_s=duration, min_queries=10, warmup=3, block_size=10, block_drop=2),
                            monitor, objective=settings.objective, repeats=repeats, on_failure=failed)
    if chosen.candidate.key not in figures:
        return chosen, figures
    for entry in defaults:
        if entry.status != "rejected":
            entry.status = "default"
    best = min((e for e in defaults if e.candidate.key in figures), default=None,
               key=lambda e: figures[e.candidate.key].relative)
    if best is not None and figures[best.candidate.key].relative < 1.0 and _within(best, figures, settings):
        if settings.memory_budget is not None:
            try:
                best.memory_mb = _memory(best, cache, model_for, settings)
            except EdgecoreError as exc:
                notes.append(f"memory of {best.candidate.key} not measured: {exc}")
        if settings.memory_budget is None or (best.memory_mb is not None and
                                              best.memory_mb * 1e6 <= settings.memory_budget):
            notes.append(f"{chosen.candidate.key} measured {figures[best.candidate.key].relative:.3f}x slower than "
                         f"the default {best.candidate.key} in the final measurement: the default is chosen")
            if chosen.status != "rejected":
                chosen.status = "finalist"
            best.loss = best.loss if best.loss is not None else 0.0
            return best, figures
    return chosen, figures


def _within(entry: Entry, figures: Mapping[str, Figures], settings: TuneSettings) -> bool:
    mine = figures[entry.candidate.key]
    return settings.latency_budget_ms is None or (mine.p99_ms is not None and mine.p99_ms <= settings.latency_budget_ms)


def _memory(entry: Entry, cache: TuneCache, model_for: Callable, settings: TuneSettings) -> float:
    from edgecore.tune.memory import measure_pss

    candidate = entry.candidate
    key = f"{candidate.key}@{entry.artifact_key}"
    cached = cache.get("memory", key)
    if cached is None:
        config = candidate.engine_config(_base_config())
        fields = {f.name: getattr(config, f.name) for f in attrs.fields(type(config))
                  if getattr(config, f.name) != f.default and f.name not in ("custom_options", "cache_dir")}
        fields["preferred_batch_sizes"] = list(config.preferred_batch_sizes)
        fields["backend"] = config.backend
        cached = measure_pss(str(model_for(candidate)), fields, batch=candidate.batch, sequence=settings.sequence,
                             timeout_s=max(60.0, settings.time_limit_s))
        cache.put("memory", key, cached)
    return float(cached["pss_growth_mb"])


def _base_config():
    from edgecore.config import EngineConfig

    return EngineConfig()


def _halving_key(settings: TuneSettings, flags: frozenset[str]) -> str:
    """Eliminations hold for the same objective and latency budget on the same CPU."""
    import hashlib

    text = f"{settings.objective}|{settings.latency_budget_ms}|{settings.accuracy_budget}|{sorted(flags)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _relative_text(entry: Entry, anchor: Entry, settings: TuneSettings) -> str:
    figure = "p50 latency" if settings.objective == "latency" else "time per sample"
    return f"{entry.figures.relative:.2f}x the {figure} of {anchor.candidate.key}"
