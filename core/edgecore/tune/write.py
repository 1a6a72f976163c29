"""Writing a search's outcome: the ``tuned/`` folder (layout in :mod:`edgecore.tune.output`) and the
:class:`~edgecore.tune.TuneResult`, with the gain over the best default judged by ``bench --compare``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import edgecore.tune.report as tune_report
from edgecore.tune.output import MODEL, TOML, bench_report, describe_failure, engine_fields, export_model, write_toml

if TYPE_CHECKING:
    from edgecore.graph import Graph
    from edgecore.tune.result import TuneResult
    from edgecore.tune.search import Entry, SearchOutcome
    from edgecore.tune.settings import TuneSettings

logger = logging.getLogger(__name__)

__all__ = ["write_outputs"]


def _best_default(outcome: SearchOutcome) -> Entry | None:
    chosen = outcome.chosen
    defaults = [e for e in outcome.entries if e.candidate.is_default and e.candidate.key in outcome.final
                and e is not chosen]
    return min(defaults, key=lambda e: outcome.final[e.candidate.key].relative, default=None)


def _gain(outcome: SearchOutcome, settings: TuneSettings, machine: Mapping[str, Any], model: Mapping[str, Any],
          folder: Path | None) -> tuple[dict[str, Any] | None, str | None, dict[str, Path]]:
    """The chosen configuration against the best default, through :func:`compare_reports`."""
    from edgecore.bench.compare import compare_reports

    chosen, files = outcome.chosen, {}
    default = _best_default(outcome) if chosen is not None else None
    if chosen is None or default is None or chosen.candidate.key not in outcome.final:
        return None, None, files
    old = bench_report(default, outcome.final[default.candidate.key], objective=settings.objective, machine=machine,
                       model=model, settings=settings)
    new = bench_report(chosen, outcome.final[chosen.candidate.key], objective=settings.objective, machine=machine,
                       model=model, settings=settings)
    comparison = compare_reports(old, new, threshold=0.0)
    figure = "p50_ms" if settings.objective == "latency" else "samples_per_s"
    change = next((f for f in comparison.figures if f.figure == figure), None)
    gain = {
        "against": default.candidate.key, "figure": figure,
        "default": change.old if change else None, "tuned": change.new if change else None,
        "change": change.change if change else None, "interval": [change.low, change.high] if change else None,
        "verdict": change.verdict if change else None,
        "note": "change is oriented so that negative is better (faster / more throughput)",
    }
    if folder is not None:
        bench = folder / "bench"
        bench.mkdir(exist_ok=True)
        for name, document in (("default", old), ("tuned", new)):
            files[f"bench_{name}"] = bench / f"{name}.json"
            files[f"bench_{name}"].write_text(json.dumps(document, indent=2) + "\n")
        files["compare"] = folder / "compare.json"
        files["compare"].write_text(json.dumps(comparison.to_json(), indent=2, default=str) + "\n")
    text = comparison.markdown() + "\n\n" + "\n".join(f"- {note}" for note in comparison.notes)
    return gain, text, files


def _summary(outcome: SearchOutcome, settings: TuneSettings, gain: Mapping[str, Any] | None) -> list[str]:
    chosen = outcome.chosen
    measured = sum(1 for e in outcome.entries if e.figures is not None)
    lines = [
        f"- objective: {settings.objective}; accuracy budget: "
        f"{settings.accuracy_budget if settings.accuracy_budget is not None else 'optimizer default'}; memory "
        f"budget: {f'{settings.memory_budget / 1e6:g} MB' if settings.memory_budget else 'none'}; latency "
        f"budget: {f'{settings.latency_budget_ms:g} ms' if settings.latency_budget_ms else 'none'}",
        f"- {len(outcome.entries)} candidates, {measured} measured, in {outcome.seconds:.1f} s of a "
        f"{settings.time_limit_s:g} s limit" + (" (continued from the tuning cache)" if outcome.resumed else ""),
        f"- machine quiet during the search: {outcome.load.get('quiet')}",
    ]
    if chosen is None:
        lines.append(f"- **nothing chosen**: {describe_failure(outcome)}")
    else:
        loss = f"{chosen.loss:.3g} {chosen.metric}".strip() if chosen.loss is not None else "-"
        memory = f"{chosen.memory_mb:.1f} MB" if chosen.memory_mb is not None else "not measured"
        lines.append(f"- **chosen: {chosen.candidate.key}** (accuracy loss {loss}, memory {memory})")
    if gain and gain.get("change") is not None:
        factor = gain["tuned"] / gain["default"] if gain["default"] else float("nan")
        lines.append(f"- against the best default ({gain['against']}): {gain['figure']} {gain['default']:.4g} -> "
                     f"{gain['tuned']:.4g} (x{factor:.3g}); bench --compare: {gain['verdict']}, change "
                     f"{gain['change']:+.1%} with 95% interval {gain['interval'][0]:+.1%} to "
                     f"{gain['interval'][1]:+.1%} (+ = worse)")
    return lines


def write_outputs(
    outcome: SearchOutcome, *, graph: Graph, model: Any, settings: TuneSettings, output: str | Path | None,
    machine: Mapping[str, Any], chosen_file: str | None,
) -> TuneResult:
    """Write ``output`` (None: nothing) and return the result; ``chosen_file`` is the model file the
    chosen candidate ran (re-saved as ``model.onnx`` with its weights)."""
    from edgecore.tune.result import TuneResult

    folder = Path(output) if output is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    model_info = {"source": str(model) if not hasattr(model, "SerializeToString") else graph.name,
                  "name": graph.name, "fingerprint": graph.fingerprint}
    gain, comparison, files = _gain(outcome, settings, machine, model_info, folder)
    files = dict(files)
    chosen = outcome.chosen
    config = chosen.candidate.engine_config(_base()) if chosen is not None else None
    document = {
        "schema": tune_report.SCHEMA, "model": model_info, "settings": settings.to_json(),
        "chosen": chosen.candidate.key if chosen is not None else None,
        "engine_config": engine_fields(config) if config is not None else None,
        "gain": gain, "seconds": outcome.seconds, "resumed": outcome.resumed, "notes": list(outcome.notes),
        "candidates": tune_report.entries_json(outcome.entries),
        "pruned": [r.to_json() for r in outcome.rejections],
        "artifacts": {k: {**a.to_json(), "report": None} for k, a in outcome.artifacts.items()},
        "machine": dict(machine),
        "method": {
            "measurement": "edgecore.bench.loops interleaved blocks; each group holds the anchor (best so far); "
                           "the first queries after a switch dropped; groups on a busy machine measured again",
            "memory": "PSS growth in a fresh process (edgecore.tune.memory)",
            "accuracy": "the pass manager's check of each lossy pass on the calibration samples",
        },
    }
    if folder is not None:
        if chosen is not None:
            files["model"] = export_model(chosen_file, graph, folder / MODEL)
            files["toml"] = write_toml(
                folder / TOML, {"model": MODEL},
                {"engine": engine_fields(config),
                 "tune": {"objective": settings.objective, "chosen": chosen.candidate.key,
                          "precision": chosen.candidate.precision, "batch": chosen.candidate.batch,
                          "accuracy_loss": chosen.loss, "metric": chosen.metric or None,
                          "memory_mb": chosen.memory_mb, "source": model_info["source"],
                          "fingerprint": graph.fingerprint}},
                comment="written by edgecore tune: Engine via edgecore.tune.from_tuned(folder), or edgecore serve "
                        "folder/\n[engine] holds the EngineConfig fields that differ from the defaults",
            )
        files["report_json"] = folder / "report.json"
        files["report_json"].write_text(json.dumps(document, indent=2, default=str) + "\n")
        files["report_md"] = folder / "report.md"
        files["report_md"].write_text(tune_report.markdown(outcome, _summary(outcome, settings, gain), comparison))
        plot = tune_report.write_pareto(outcome, folder / "pareto.png", settings.objective)
        if plot is not None:
            files["pareto"] = plot
    document["summary"] = _summary(outcome, settings, gain)
    return TuneResult(chosen=document["chosen"], output=folder, files=files, gain=gain, report=document,
                      outcome=outcome)


def _base():
    from edgecore.config import EngineConfig

    return EngineConfig()
