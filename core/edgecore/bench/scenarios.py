"""Built-in scenarios after MLPerf LoadGen: single-stream, offline, multi-stream; and accuracy.

Server (Poisson arrivals, peak search) lives in :mod:`edgecore.bench.server`, cold start in
:mod:`edgecore.bench.coldstart`. Each runner takes a :class:`~edgecore.bench.context.ScenarioContext`
and returns a :class:`~edgecore.bench.results.ScenarioResult`.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

from edgecore.bench import loops, registry
from edgecore.bench.context import ScenarioContext
from edgecore.bench.results import Measured, ScenarioResult
from edgecore.errors import ConfigurationError

__all__ = ["single_stream", "offline", "multi_stream", "accuracy"]


def single_stream(ctx: ScenarioContext) -> ScenarioResult:
    """One query at a time, the next issued when the last is answered: latency percentiles."""
    feeds = ctx.feeds()
    ctx.warm_up(feeds)
    return ctx.result(ctx.measure(loops.sequential(feeds)))


def offline(ctx: ScenarioContext) -> ScenarioResult:
    """Back-to-back queries of ``batch`` samples each: throughput (samples/s) at that batch size."""
    feeds = ctx.feeds()
    ctx.warm_up(feeds)
    return ctx.result(ctx.measure(loops.sequential(feeds)), metrics={"batch": ctx.batch})


def multi_stream(ctx: ScenarioContext) -> ScenarioResult:
    """Each query is ``streams`` samples issued together (e.g. frames of several cameras); the query
    ends when its last sample is answered, and the next is issued then: per-query p99 latency."""
    streams = ctx.settings.streams
    feeds = ctx.feeds()
    ctx.warm_up(feeds, concurrent=True)
    measured = ctx.measure(loops.concurrent(feeds, streams), samples_per_query=streams * ctx.batch)
    metrics = {"streams": streams, "dispatch": ctx.session.scheduler()}
    raw_metrics = {"streams": streams, "dispatch": f"run from {ctx.settings.concurrency} worker threads"}
    return ctx.result(measured, metrics=metrics, raw_metrics=raw_metrics)


# -- accuracy -------------------------------------------------------------------------------------


def _dataset_name(ctx: ScenarioContext) -> str:
    if ctx.settings.dataset:
        return ctx.settings.dataset
    source = ctx.source
    if isinstance(source, str) and source.startswith("zoo:"):
        return source[len("zoo:") :]
    return ctx.graph.name


def _first_output(outputs: Any) -> np.ndarray:
    if isinstance(outputs, Mapping):
        return np.asarray(next(iter(outputs.values())))
    return np.asarray(outputs[0])


def _as_feeds(ctx: ScenarioContext, inputs: Any) -> dict[str, np.ndarray]:
    if isinstance(inputs, Mapping):
        return {name: np.asarray(value) for name, value in inputs.items()}
    names = [spec.name for spec in ctx.graph.inputs]
    if len(names) != 1:
        raise ConfigurationError(
            f"the data set gives one input array, but {ctx.graph.name} takes {len(names)} inputs {names}; "
            f"a data set for it must return a mapping of input name -> array"
        )
    return {names[0]: np.asarray(inputs)}


def _top1(run: Any, feeds: dict[str, np.ndarray], labels: np.ndarray, batch: int) -> tuple[int, Measured]:
    correct, latencies = 0, []
    total = len(labels)
    started = time.perf_counter_ns()
    for begin in range(0, total, batch):
        chunk = {name: array[begin : begin + batch] for name, array in feeds.items()}
        t0 = time.perf_counter_ns()
        logits = _first_output(run(chunk))
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
        correct += int((logits.reshape(len(logits), -1).argmax(axis=1) == labels[begin : begin + batch]).sum())
    elapsed = (time.perf_counter_ns() - started) / 1e9
    return correct, Measured(queries=len(latencies), samples=total, elapsed_s=elapsed, latencies_ms=latencies)


def accuracy(ctx: ScenarioContext) -> ScenarioResult:
    """Top-1 accuracy on a labelled data set (``dataset:NAME``), through the Engine (and the raw
    runtime with ``baseline``), in queries of ``batch`` samples."""
    name = _dataset_name(ctx)
    inputs, labels = registry.get_dataset(ctx.plugin_manager, name).load()
    labels = np.asarray(labels).reshape(-1)
    feeds = _as_feeds(ctx, inputs)
    ctx.progress(0.1, f"{len(labels)} labelled samples")
    correct, ours = _top1(ctx.engine.run, feeds, labels, ctx.batch)
    measured = {"edgecore": ours}
    metrics = {"dataset": name, "samples": len(labels), "correct": correct, "top1": correct / max(1, len(labels))}
    raw_metrics = None
    if ctx.baseline:
        ctx.progress(0.5, "raw runtime")
        raw_correct, measured["raw"] = _top1(ctx.raw.run, feeds, labels, ctx.batch)
        raw_metrics = dict(metrics, correct=raw_correct, top1=raw_correct / max(1, len(labels)))
    ctx.progress(1.0, f"top-1 {metrics['top1']:.2%}")
    return ctx.result(measured, metrics=metrics, raw_metrics=raw_metrics)
