"""PNG plot of a :class:`BenchReport` (matplotlib, imported only here: ``pip install edgecore[plot]``).

One row per scenario run: the latency distribution (histogram, on a log scale when the tail is
long; the raw runtime's overlaid with ``--baseline``; p50 and p99 marked) and, beside it, either the
latency percentile curve or, for a server peak search, p99 and achieved QPS against target QPS. A
last row plots throughput and p99 against batch size for scenarios run at several batch sizes (not
server, whose throughput is its load: there the peak search is the figure to compare).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from edgecore.bench.results import BenchReport, ScenarioResult
from edgecore.errors import ConfigurationError

__all__ = ["write_plot", "MAX_ROWS"]

MAX_ROWS = 8
#: Above this max/min latency spread, distributions are drawn on a log scale.
WIDE = 20.0
_OURS, _RAW = "#1f77b4", "#ff7f0e"
#: Scenarios whose throughput is set by the load, not by the batch size: no sweep line for them.
_NO_SWEEP = frozenset({"server", "cold-start", "accuracy"})


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigurationError(f"--plot needs matplotlib ({exc}); pip install 'edgecore[plot]'") from None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _label(result: ScenarioResult) -> str:
    return f"{result.scenario} (batch {result.batch})"


def _histogram(ax, result: ScenarioResult) -> None:
    series = [("edgecore", result.latencies_ms, _OURS)]
    if result.baseline is not None and result.baseline.latencies_ms.size:
        series.append((f"raw {result.baseline.runtime}", result.baseline.latencies_ms, _RAW))
    everything = np.concatenate([values for _, values, _ in series])
    high = float(np.percentile(everything, 99.9)) if everything.size else 1.0
    low = float(everything.min()) if everything.size else 0.0
    high = max(high, low + 1e-6)
    wide = low > 0 and high / low > WIDE
    bins = np.geomspace(low, high, 50) if wide else np.linspace(low, high, 40)
    if wide:
        ax.set_xscale("log")
    for name, values, color in series:
        ax.hist(np.clip(values, low, high), bins=bins, alpha=0.55, color=color, label=f"{name} (n={values.size})")
        p50, p99 = np.percentile(values, (50, 99))
        ax.axvline(p50, color=color, linestyle="--", linewidth=1)
        ax.axvline(p99, color=color, linestyle=":", linewidth=1.2)
    ax.set_title(f"{_label(result)}: latency distribution (-- p50, : p99)", fontsize=9)
    ax.set_xlabel("latency (ms)" if result.scenario != "cold-start" else "process start to first result (ms)")
    ax.set_ylabel("queries")
    ax.legend(fontsize=7)


def _percentiles(ax, result: ScenarioResult) -> None:
    ranks = np.linspace(0, 99.9, 200)
    ax.plot(ranks, np.percentile(result.latencies_ms, ranks), color=_OURS, label="edgecore")
    if result.baseline is not None and result.baseline.latencies_ms.size:
        raw = result.baseline
        ax.plot(ranks, np.percentile(raw.latencies_ms, ranks), color=_RAW, label=f"raw {raw.runtime}")
    if result.latencies_ms.min() > 0 and np.percentile(result.latencies_ms, 99.9) / result.latencies_ms.min() > WIDE:
        ax.set_yscale("log")
    ax.set_title(f"{_label(result)}: latency by percentile", fontsize=9)
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _peak(ax, result: ScenarioResult) -> None:
    peak = result.metrics["peak"]
    probes = sorted(peak["probes"], key=lambda p: p["target_qps"])
    target = [p["target_qps"] for p in probes]
    ax.plot(target, [p["p99_ms"] for p in probes], "o-", color=_OURS, label="p99 (ms)")
    ax.axhline(peak["latency_bound_ms"], color="red", linestyle="--", linewidth=1, label="p99 bound")
    if peak.get("qps"):
        ax.axvline(peak["qps"], color="green", linestyle=":", label=f"peak {peak['qps']:.1f} QPS")
    ax.set_xlabel("target QPS")
    ax.set_ylabel("p99 latency (ms)")
    twin = ax.twinx()
    twin.plot(target, [p["achieved_qps"] or 0 for p in probes], "s--", color="gray", label="achieved QPS")
    twin.set_ylabel("achieved QPS")
    ax.set_title(f"{_label(result)}: peak search", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    twin.legend(fontsize=7, loc="lower right")


def _sweeps(report: BenchReport) -> dict[str, list[ScenarioResult]]:
    by_name: dict[str, list[ScenarioResult]] = defaultdict(list)
    for result in report.results:
        if result.scenario in _NO_SWEEP:
            continue
        if result.batch is not None and result.samples_per_s is not None:
            by_name[result.scenario].append(result)
    return {name: sorted(runs, key=lambda r: r.batch) for name, runs in by_name.items() if len({r.batch for r in runs}) > 1}


def _sweep(ax, sweeps: dict[str, list[ScenarioResult]]) -> None:
    twin = ax.twinx()
    for name, runs in sweeps.items():
        batches = [r.batch for r in runs]
        ax.plot(batches, [r.samples_per_s for r in runs], "o-", label=f"{name} samples/s")
        twin.plot(batches, [r.latency.p99 if r.latency else np.nan for r in runs], "s--", label=f"{name} p99 ms")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput (samples/s)")
    twin.set_ylabel("p99 latency per query (ms)")
    ax.set_title("throughput and p99 against batch size", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    twin.legend(fontsize=7, loc="lower right")


def write_plot(report: BenchReport, destination: str | Path) -> Path:
    """Draw the report into a PNG at ``destination``; return the path."""
    plt = _pyplot()
    rows = [r for r in report.results if r.latencies_ms.size][:MAX_ROWS]
    sweeps = _sweeps(report)
    count = len(rows) + (1 if sweeps else 0)
    if count == 0:
        raise ConfigurationError("nothing to plot: no scenario of this report measured latencies")
    figure, axes = plt.subplots(count, 2, figsize=(12, 3.6 * count), squeeze=False)
    for row, result in enumerate(rows):
        _histogram(axes[row][0], result)
        if result.scenario == "server" and (result.metrics.get("peak") or {}).get("probes"):
            _peak(axes[row][1], result)
        else:
            _percentiles(axes[row][1], result)
    if sweeps:
        _sweep(axes[-1][0], sweeps)
        axes[-1][1].axis("off")
    figure.suptitle(f"{report.model.get('source')} on {report.backend} — {report.machine.get('cpu')}", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.45 / (3.6 * count)))
    path = Path(destination)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
