"""The ``tuned/`` folder: what ``edgecore tune`` writes, and what ``from_tuned``/``edgecore serve`` read.

::

    tuned/
      model.onnx            the chosen model (+ model.onnx.data when its weights are large)
      edgecore.toml         model = "model.onnx", [engine]: the EngineConfig fields that differ from
                            the defaults, [tune]: objective, budgets, chosen candidate, gain
      report.md / .json     every candidate: p50/p99, throughput, memory, accuracy loss, why rejected
      pareto.png            latency vs accuracy loss, memory as colour (when matplotlib is installed)
      bench/default.json    harness reports of the best default configuration and of the chosen one,
      bench/tuned.json      from the final interleaved measurement; compare.json: bench --compare

:func:`load_tuned` gives ``(model path, EngineConfig)``; :func:`from_tuned` loads an Engine from it.
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import attrs

from edgecore.tuned import MODEL, TOML, load_tuned

if TYPE_CHECKING:
    from edgecore.config import EngineConfig
    from edgecore.engine import Engine
    from edgecore.tune.measure import Figures
    from edgecore.tune.search import Entry, SearchOutcome
    from edgecore.tune.settings import TuneSettings

__all__ = ["TOML", "MODEL", "load_tuned", "from_tuned", "write_toml", "engine_fields", "bench_report"]



# -- edgecore.toml ---------------------------------------------------------------------------------


def engine_fields(config: EngineConfig) -> dict[str, Any]:
    """The fields of ``config`` that differ from :class:`EngineConfig`'s defaults (``backend`` always)."""
    out: dict[str, Any] = {"backend": config.backend}
    for field in attrs.fields(type(config)):
        value = getattr(config, field.name)
        default = field.default.factory() if isinstance(field.default, attrs.Factory) else field.default
        if field.name == "custom_options":
            value, default = dict(value), dict(default or {})
        if value != default and value is not None:
            out[field.name] = list(value) if isinstance(value, tuple) else value
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value) if math.isfinite(value) else '"nan"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def write_toml(path: Path, top: Mapping[str, Any], tables: Mapping[str, Mapping[str, Any]], comment: str) -> Path:
    """Write a flat TOML document: ``top`` keys, then one ``[table]`` (and ``[table.sub]`` for nested
    mappings) per entry of ``tables``; None values are left out."""
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [f"{k} = {_toml_value(v)}" for k, v in top.items() if v is not None]
    for name, table in tables.items():
        nested = {k: v for k, v in table.items() if isinstance(v, Mapping)}
        lines += ["", f"[{name}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None and k not in nested]
        for key, sub in nested.items():
            lines += ["", f"[{name}.{key}]"] + [f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in sub.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def from_tuned(path: str | Path, *, plugin_manager: Any = None, **overrides: Any) -> Engine:
    """:meth:`Engine.from_tuned <edgecore.Engine.from_tuned>`."""
    from edgecore.engine import Engine

    return Engine.from_tuned(path, plugin_manager=plugin_manager, **overrides)


# -- writing the folder ----------------------------------------------------------------------------


def export_model(source: str | None, graph: Any, destination: Path) -> Path:
    """The chosen model at ``destination``: the model file ``source`` (its external data loaded) re-saved
    under the new name, or ``graph`` saved when there is no file."""
    from edgecore.tune.artifacts import save_graph, save_proto

    for stale in (destination, destination.with_name(destination.name + ".data")):
        stale.unlink(missing_ok=True)
    if source is None:
        return save_graph(graph, destination)
    import onnx

    return save_proto(onnx.load(source), destination)


def bench_report(entry: Entry, figures: Figures, *, objective: str, machine: Mapping[str, Any],
                 model: Mapping[str, Any], settings: TuneSettings) -> dict[str, Any]:
    """A harness JSON report (``edgecore.bench/1``) of ``entry``'s figures from the final measurement,
    so that ``bench --compare`` can judge the gain with its noise."""
    from edgecore.bench.coldstart import config_fields
    from edgecore.bench.report import to_json
    from edgecore.bench.results import BenchReport, ScenarioResult

    scenario = "tune-" + objective
    result = ScenarioResult(
        scenario=scenario, description=f"{entry.candidate.key}: the final interleaved measurement of edgecore tune",
        batch=None, queries=figures.queries, samples=figures.samples, elapsed_s=figures.elapsed_s,
        latency=_summary(figures), queries_per_s=figures.queries / figures.elapsed_s if figures.elapsed_s else None,
        samples_per_s=figures.samples_per_s, latencies_ms=figures.latencies_ms,
        metrics={"candidate": entry.candidate.key, "batch": entry.candidate.batch,
                 "instances": entry.candidate.instances},
    )
    from edgecore.config import EngineConfig

    report = BenchReport(
        model=model, backend=entry.candidate.backend,
        config=config_fields(entry.candidate.engine_config(EngineConfig())),
        settings=settings.to_json(), method={"tune": "interleaved blocks against the other finalists and defaults"},
        machine=machine, results=(result,),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return to_json(report)


def _summary(figures: Figures):
    from edgecore.bench.results import summarize

    return summarize(figures.latencies_ms)


def describe_failure(outcome: SearchOutcome) -> str:
    counts: dict[str, int] = {}
    for entry in outcome.entries:
        if entry.status == "rejected":
            counts[entry.stage] = counts.get(entry.stage, 0) + 1
    return ("no candidate met the budgets (" + ", ".join(f"{n} rejected for {s}" for s, n in sorted(counts.items()))
            + "); see the report for each reason")

