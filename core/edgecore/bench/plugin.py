"""Core's benchmark scenarios, reporters and labelled data sets, registered through the
``edgecore_bench_*`` hooks exactly as a third-party plugin would register its own."""

from __future__ import annotations

from edgecore.hookspecs import hookimpl
from edgecore.specs import DatasetSpec, ReporterSpec, ScenarioSpec

__all__ = ["edgecore_bench_datasets", "edgecore_bench_reporters", "edgecore_bench_scenarios"]


def _single_stream(ctx):
    from edgecore.bench.scenarios import single_stream

    return single_stream(ctx)


def _offline(ctx):
    from edgecore.bench.scenarios import offline

    return offline(ctx)


def _multi_stream(ctx):
    from edgecore.bench.scenarios import multi_stream

    return multi_stream(ctx)


def _server(ctx):
    from edgecore.bench.server import server

    return server(ctx)


def _cold_start(ctx):
    from edgecore.bench.coldstart import cold_start

    return cold_start(ctx)


def _accuracy(ctx):
    from edgecore.bench.scenarios import accuracy

    return accuracy(ctx)


def _json(report, destination):
    from edgecore.bench.report import write_json

    return write_json(report, destination)


def _markdown(report, destination):
    from edgecore.bench.report import write_markdown

    return write_markdown(report, destination)


def _plot(report, destination):
    from edgecore.bench.plot import write_plot

    return write_plot(report, destination)


def _digits():
    from edgecore.zoo import digits_test_split

    return digits_test_split()


@hookimpl
def edgecore_bench_scenarios() -> list[ScenarioSpec]:
    """single-stream, offline, server, multi-stream, cold-start, accuracy."""
    return [
        ScenarioSpec(name="single-stream", runner=_single_stream, description="one query at a time: latency percentiles"),
        ScenarioSpec(name="offline", runner=_offline, description="back-to-back batched queries: throughput"),
        ScenarioSpec(
            name="server",
            runner=_server,
            description="Poisson arrivals at --target-qps: achieved QPS and p99; --find-peak: highest QPS under a p99 bound",
        ),
        ScenarioSpec(
            name="multi-stream",
            runner=_multi_stream,
            description="queries of --streams samples issued together: per-query p99",
        ),
        ScenarioSpec(
            name="cold-start",
            runner=_cold_start,
            description="fresh process to first result (import, load, compile, first inference); peak memory growth",
        ),
        ScenarioSpec(name="accuracy", runner=_accuracy, description="top-1 accuracy on a labelled data set"),
    ]


@hookimpl
def edgecore_bench_reporters() -> list[ReporterSpec]:
    """json, markdown and plot."""
    return [
        ReporterSpec(name="json", write=_json, description="the JSON document of docs/benchmarks.md"),
        ReporterSpec(name="markdown", write=_markdown, description="a Markdown table"),
        ReporterSpec(name="plot", write=_plot, description="PNG: latency distributions, sweeps, peak search"),
    ]


@hookimpl
def edgecore_bench_datasets() -> list[DatasetSpec]:
    """The digits test split, for ``digits_cnn``."""
    return [DatasetSpec(name="digits_cnn", load=_digits, description="scikit-learn digits, held-out split (450 images)")]
