"""Reports of a :class:`BenchReport`: JSON (the documented schema), Markdown, and a rich table.

The JSON layout is documented field by field in docs/benchmarks.md; :data:`RESULT_FIELDS` and
friends list the keys every report carries (values may be null where a figure does not apply).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs
import numpy as np

from edgecore.bench.results import BaselineResult, BenchReport, ScenarioResult, histogram

__all__ = [
    "to_json",
    "write_json",
    "write_markdown",
    "table",
    "REPORT_FIELDS",
    "RESULT_FIELDS",
    "BASELINE_FIELDS",
    "LATENCY_FIELDS",
    "MACHINE_FIELDS",
]

REPORT_FIELDS = (
    "schema", "created", "command", "wall_s", "model", "backend", "config", "settings", "optimization", "method",
    "machine", "results",
)  # fmt: skip
RESULT_FIELDS = (
    "scenario", "description", "batch", "queries", "samples", "elapsed_s", "failures", "latency_ms", "histogram",
    "queries_per_s", "samples_per_s", "metrics", "baseline",
)  # fmt: skip
BASELINE_FIELDS = (
    "runtime", "version", "queries", "samples", "elapsed_s", "latency_ms", "histogram", "queries_per_s",
    "samples_per_s", "metrics", "ratio",
)  # fmt: skip
LATENCY_FIELDS = ("count", "mean", "std", "min", "p50", "p90", "p95", "p99", "max")
MACHINE_FIELDS = (
    "cpu", "cpu_simd", "cpu_max_mhz", "physical_cores", "logical_cores", "usable_cores", "memory_total_mb",
    "load_average", "os", "python", "python_implementation", "edgecore", "runtimes", "plugins",
)  # fmt: skip


def _plain(value: Any) -> Any:
    """JSON-ready copy: mappings, sequences, numpy scalars; NaN and infinity become null."""
    if isinstance(value, (dict, MappingProxyType)):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if attrs.has(type(value)):
        return _plain(attrs.asdict(value, recurse=False))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _baseline_json(baseline: BaselineResult | None) -> dict[str, Any] | None:
    if baseline is None:
        return None
    return {
        "runtime": baseline.runtime,
        "version": baseline.version,
        "queries": baseline.queries,
        "samples": baseline.samples,
        "elapsed_s": baseline.elapsed_s,
        "latency_ms": baseline.latency.to_json() if baseline.latency else None,
        "histogram": histogram(baseline.latencies_ms),
        "queries_per_s": baseline.queries_per_s,
        "samples_per_s": baseline.samples_per_s,
        "metrics": _plain(baseline.metrics),
        "ratio": _plain(baseline.ratio),
    }


def _result_json(result: ScenarioResult) -> dict[str, Any]:
    return {
        "scenario": result.scenario,
        "description": result.description,
        "batch": result.batch,
        "queries": result.queries,
        "samples": result.samples,
        "elapsed_s": result.elapsed_s,
        "failures": result.failures,
        "latency_ms": result.latency.to_json() if result.latency else None,
        "histogram": histogram(result.latencies_ms),
        "queries_per_s": result.queries_per_s,
        "samples_per_s": result.samples_per_s,
        "metrics": _plain(result.metrics),
        "baseline": _baseline_json(result.baseline),
    }


def to_json(report: BenchReport) -> dict[str, Any]:
    """The report as the JSON document of docs/benchmarks.md."""
    return _plain(
        {
            "schema": report.schema,
            "created": report.created,
            "command": report.command,
            "wall_s": report.wall_s,
            "model": report.model,
            "backend": report.backend,
            "config": report.config,
            "settings": report.settings,
            "optimization": report.optimization,
            "method": report.method,
            "machine": report.machine,
            "results": [_result_json(r) for r in report.results],
        }
    )


def write_json(report: BenchReport, destination: str | Path) -> Path:
    """Write the report's JSON to ``destination``; return the path."""
    path = Path(destination)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(report), indent=2) + "\n")
    return path


# -- human-readable -------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}{unit}"


def _notes(result: ScenarioResult) -> str:
    m = result.metrics
    if result.scenario == "server":
        peak = m.get("peak")
        text = f"target {_fmt(m.get('target_qps'), 1)} QPS, achieved {_fmt(m.get('achieved_qps'), 1)}"
        if m.get("latency_bound_ms") is not None:
            text += f"; p99 bound {m['latency_bound_ms']:g} ms: {'met' if m.get('meets_bound') else 'missed'}"
        if peak:
            text += f"; peak {_fmt(peak.get('qps'), 1)} QPS ({len(peak.get('probes', []))} probes)"
        return text
    if result.scenario == "cold-start":
        memory = m.get("memory") or {}
        stages = m.get("stages_ms") or {}
        shown = {k.removesuffix("_ms"): v for k, v in stages.items() if v is not None and k != "in_process_ms"}
        parts = ", ".join(f"{k} {_sig(v)}" for k, v in shown.items())
        return f"{_fmt(m.get('cold_start_ms'), 0)} ms ({parts}); peak memory +{_fmt(memory.get('peak_growth_mb'), 1)} MB"
    if result.scenario == "accuracy":
        return f"top-1 {m.get('top1', 0):.2%} on {m.get('samples')} samples of {m.get('dataset')}"
    if result.scenario == "multi-stream":
        return f"{m.get('streams')} streams per query via {m.get('dispatch')}"
    if result.scenario == "offline":
        return f"{_fmt(result.samples_per_s, 1)} samples/s at batch {result.batch}"
    return ", ".join(f"{k}={v}" for k, v in m.items() if isinstance(v, (int, float, str)))[:80]


def _ratio_text(baseline: BaselineResult) -> str:
    r = baseline.ratio
    return f"p50 {_fmt(r.get('p50'), 2)}, QPS {_fmt(r.get('queries_per_s'), 2)}"


def _sig(value: float | None) -> str:
    """Three significant digits, without exponents for everyday magnitudes."""
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"


def _rows(result: ScenarioResult, with_baseline: bool) -> list[list[str]]:
    def row(label: str, latency: Any, qps: float | None, sps: float | None, ratio: str) -> list[str]:
        cells = [
            label,
            str(result.batch or "-"),
            str(latency.count if latency else 0),
            _sig(latency and latency.p50),
            _sig(latency and latency.p90),
            _sig(latency and latency.p99),
            _sig(latency and latency.mean),
            _sig(qps),
            _sig(sps),
        ]
        return cells + [ratio] if with_baseline else cells

    rows = [row(result.scenario, result.latency, result.queries_per_s, result.samples_per_s, "")]
    baseline = result.baseline
    if baseline is not None:
        label = f"  raw {baseline.runtime}"
        rows.append(row(label, baseline.latency, baseline.queries_per_s, baseline.samples_per_s, _ratio_text(baseline)))
    return rows


HEADERS = ("scenario", "batch", "n", "p50", "p90", "p99", "mean", "QPS", "samples/s")
RATIO_HEADER = "edgecore/raw"


def _headers(report: BenchReport) -> tuple[bool, tuple[str, ...]]:
    with_baseline = any(r.baseline is not None for r in report.results)
    return with_baseline, HEADERS + ((RATIO_HEADER,) if with_baseline else ())


def _caption(report: BenchReport) -> str:
    machine = report.machine
    runtimes = ", ".join(f"{k} {v}" for k, v in (machine.get("runtimes") or {}).items())
    return (
        f"{machine.get('cpu')} ({machine.get('usable_cores')} cores, load {machine.get('load_average')}), "
        f"{machine.get('os')}; edgecore {machine.get('edgecore')}; {runtimes}"
    )


def table(report: BenchReport) -> Any:
    """A rich renderable of the report: the figures table, then one line of notes per result (the
    CLI prints it)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    with_baseline = any(r.baseline is not None for r in report.results)
    title = f"{report.model.get('source')} on {report.backend} (latency in ms per query)"
    out = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold underline")
    for header in HEADERS:
        out.add_column(header, justify="left" if header == "scenario" else "right", no_wrap=True)
    for result in report.results:
        for cells in _rows(result, False):
            out.add_row(*cells)
    notes = [Text(f"{r.scenario} (batch {r.batch}): {_notes(r)}") for r in report.results if _notes(r)]
    if with_baseline:
        notes += [
            Text(f"{r.scenario} (batch {r.batch}) edgecore/raw {r.baseline.runtime}: {_ratio_text(r.baseline)}")
            for r in report.results
            if r.baseline is not None
        ]
    return Group(out, *notes, Text(_caption(report), style="dim"))


def write_markdown(report: BenchReport, destination: str | Path) -> Path:
    """Write the report as a Markdown table (for READMEs); return the path."""
    with_baseline, headers = _headers(report)
    lines = [
        f"# {report.model.get('source')} on {report.backend}",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
    ]
    for result in report.results:
        for cells in _rows(result, with_baseline):
            lines.append("| " + " | ".join(c.strip() for c in cells) + " |")
    lines += ["", *(f"- {r.scenario} (batch {r.batch}): {_notes(r)}" for r in report.results if _notes(r))]
    lines += ["", f"{_caption(report)}; {report.created}"]
    path = Path(destination)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path
