"""The benchmark harness: timing loops, scenarios, baselines, cold start, reports, the CLI, and a
third-party scenario registered through ``edgecore_bench_scenarios``.

Speed is never asserted here (benchmarks measure it); these tests check what is measured and how:
block interleaving and drops, arrival rates, accuracy through the Engine, every documented JSON field.
Models are tiny (the digits CNN answers in well under a millisecond) and durations short.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from edgecore import hookimpl
from edgecore.bench import BenchSettings, ScenarioResult, run_benchmark, summarize
from edgecore.bench import loops, registry
from edgecore.bench.report import to_json
from edgecore.cli import main
from edgecore.errors import ConfigurationError
from edgecore.plugins import DEFAULT_PLUGINS, build_plugin_manager
from edgecore.specs import ReporterSpec, ScenarioSpec

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
MODEL = "zoo:digits_cnn"
QUICK = dict(duration_s=0.2, min_queries=20, warmup=3, block_size=10, block_drop=2)

cpu_simd = pytest.importorskip("edgecore_cpu_simd.plugin", reason="the cpu_simd plugin is not installed")


# -- a third-party plugin, as a module-like object --------------------------------------------------


class _ThirdParty:
    """A plugin that brings a scenario and a reporter, with no change to core."""

    @hookimpl
    def edgecore_bench_scenarios(self):
        return [ScenarioSpec(name="echo-burst", runner=_echo_burst, description="third-party: bursts of 3 queries")]

    @hookimpl
    def edgecore_bench_reporters(self):
        return [ReporterSpec(name="lines", write=_lines_reporter, description="third-party reporter")]


def _echo_burst(ctx):
    feeds = ctx.feeds()
    ctx.warm_up(feeds, concurrent=True)    # every worker thread warmed too
    measured = ctx.measure(loops.concurrent(feeds, 3), samples_per_query=3)
    return ctx.result(measured, metrics={"burst": 3, "outputs": [o.name for o in ctx.engine.outputs]})


def _lines_reporter(report, destination):
    Path(destination).write_text("\n".join(r.scenario for r in report.results))


def _plugin_manager(*extra):
    pm = build_plugin_manager(builtins=DEFAULT_PLUGINS, entrypoints=False)
    pm.register(cpu_simd, name="cpu_simd")
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()
    return pm


@pytest.fixture(scope="module")
def pm():
    return _plugin_manager()


@pytest.fixture
def third_party_pm(monkeypatch):
    pm = _plugin_manager(_ThirdParty())
    monkeypatch.setattr("edgecore.plugins.get_plugin_manager", lambda: pm)
    return pm


# -- statistics and timing loops, against independent references ----------------------------------


def test_summary_matches_numpy_percentiles():
    values = np.random.default_rng(1).exponential(2.0, 1001)
    summary = summarize(values)
    assert summary.count == 1001
    assert summary.p50 == pytest.approx(np.percentile(values, 50))
    assert summary.p90 == pytest.approx(np.percentile(values, 90))
    assert summary.p95 == pytest.approx(np.percentile(values, 95))
    assert summary.p99 == pytest.approx(np.percentile(values, 99))
    assert summary.mean == pytest.approx(values.mean())
    assert summarize([]) is None


def _recording_side(name, calls):
    def run(feeds):
        calls.append(name)

    def submit(feeds):
        future = Future()
        threading.Timer(0.001, lambda: (calls.append(name), future.set_result(None))).start()
        return future

    return loops.Side(name=name, run=run, submit=submit)


def test_interleaved_blocks_alternate_and_drop_the_first_calls_of_each_block():
    calls = []
    sides = [_recording_side("edgecore", calls), _recording_side("raw", calls)]
    settings = BenchSettings(duration_s=1e-6, min_queries=12, block_size=5, block_drop=2)
    measured = loops.measure(sides, loops.sequential({}), settings)
    # blocks of 5 kept + 2 dropped, alternating, until each side has 12 kept queries: 3 blocks per side
    assert calls == (["edgecore"] * 7 + ["raw"] * 7) * 3
    assert measured["edgecore"].queries == measured["raw"].queries == 15
    assert measured["edgecore"].latencies_ms.size == 15


def test_alone_every_query_is_kept():
    calls = []
    settings = BenchSettings(duration_s=1e-6, min_queries=7, block_size=4)
    measured = loops.measure([_recording_side("edgecore", calls)], loops.sequential({}), settings)
    assert measured["edgecore"].queries == len(calls) == 8


def test_poisson_arrivals_come_at_the_target_rate():
    calls = []
    block = loops.poisson({}, qps=400.0, seed=3)(_recording_side("edgecore", calls), 200)
    gaps = np.diff(block.starts) / 1e9
    assert gaps.mean() == pytest.approx(1 / 400.0, rel=0.2)
    assert (block.ends >= block.starts).all() and len(calls) == 200


def test_multi_stream_query_ends_with_its_last_sample():
    calls = []
    block = loops.concurrent({}, 4)(_recording_side("edgecore", calls), 5)
    assert len(calls) == 20
    assert ((block.ends - block.starts) >= 1e6).all()  # each sample takes >= 1 ms


# -- scenarios through the engine ------------------------------------------------------------------


def test_single_stream_and_offline_with_an_interleaved_baseline(pm):
    settings = BenchSettings(baseline=True, **QUICK)
    report = run_benchmark(MODEL, ["single-stream", "offline"], settings=settings, plugin_manager=pm)
    single, offline = report.result("single-stream"), report.result("offline")
    assert single.batch == 1 and offline.batch == 8
    for result in (single, offline):
        assert result.queries >= 20 and result.latency.p50 > 0
        baseline = result.baseline
        assert baseline.runtime == "onnxruntime" and baseline.queries >= 20
        assert baseline.ratio["p50"] == pytest.approx(result.latency.p50 / baseline.latency.p50)
        assert baseline.ratio["queries_per_s"] == pytest.approx(result.queries_per_s / baseline.queries_per_s)
    assert offline.samples == offline.queries * 8
    assert "blocks of 10" in report.method["interleaving"]


def test_batch_sweep_runs_each_size(pm):
    report = run_benchmark(MODEL, ["offline"], settings=BenchSettings(**QUICK), batches=[1, 4], plugin_manager=pm)
    assert [r.batch for r in report.results] == [1, 4]


def test_digits_accuracy_through_the_engine_reaches_95_percent(pm):
    report = run_benchmark(MODEL, ["accuracy"], settings=BenchSettings(baseline=True, **QUICK), plugin_manager=pm)
    result = report.result("accuracy")
    assert result.metrics["dataset"] == "digits_cnn"
    assert result.metrics["samples"] == 450
    assert result.metrics["top1"] >= 0.95
    assert result.baseline.metrics["top1"] == pytest.approx(result.metrics["top1"], abs=1 / 450)


def test_accuracy_needs_a_labelled_data_set(pm):
    with pytest.raises(ConfigurationError, match="labelled"):
        run_benchmark("zoo:resnet_tiny", ["accuracy"], settings=BenchSettings(**QUICK), plugin_manager=pm)


def test_server_peak_search_reports_probes_under_the_bound(pm):
    settings = BenchSettings(find_peak=True, latency_bound_ms=50.0, target_qps=50, **QUICK)
    report = run_benchmark(MODEL, ["server"], settings=settings, plugin_manager=pm)
    peak = report.result("server").metrics["peak"]
    assert 1 <= len(peak["probes"]) <= 10
    passed = [p for p in peak["probes"] if p["passed"]]
    assert all(p["p99_ms"] <= 50.0 for p in passed)
    assert peak["qps"] == (max(p["target_qps"] for p in passed) if passed else None)


def test_cold_start_and_memory_from_fresh_processes(pm):
    settings = BenchSettings(cold_runs=1, baseline=True, **QUICK)
    result = run_benchmark(MODEL, ["cold-start"], settings=settings, plugin_manager=pm).result("cold-start")
    metrics = result.metrics
    stages = metrics["stages_ms"]
    assert set(stages) >= {"interpreter_ms", "import_ms", "load_ms", "compile_ms", "first_inference_ms"}
    assert metrics["cold_start_ms"] >= stages["import_ms"] + stages["compile_ms"] + stages["first_inference_ms"]
    memory = metrics["memory"]
    assert memory["peak_rss_mb"] > memory["import_only_peak_rss_mb"] > 0
    assert memory["peak_growth_mb"] == pytest.approx(memory["peak_rss_mb"] - memory["import_only_peak_rss_mb"])
    assert result.baseline.runtime == "onnxruntime" and result.baseline.metrics["runs"] == 1


def test_unknown_scenario_lists_the_registered_ones(pm):
    with pytest.raises(ConfigurationError, match="single-stream"):
        run_benchmark(MODEL, ["no-such-scenario"], plugin_manager=pm)


def test_settings_refuse_a_peak_search_without_a_bound():
    with pytest.raises(ValueError, match="latency_bound_ms"):
        BenchSettings(find_peak=True)


# -- pluggability ------------------------------------------------------------------------------------


def test_registries_split_by_kind(pm):
    assert list(registry.scenarios(pm)) == ["single-stream", "offline", "server", "multi-stream", "cold-start", "accuracy"]
    assert set(registry.reporters(pm)) == {"json", "markdown", "plot"}
    assert "cpu_simd" in registry.baselines(pm)
    assert "digits_cnn" in registry.datasets(pm)


def test_third_party_scenario_is_listed_and_runs_without_core_changes(third_party_pm, tmp_path, capsys):
    assert main(["bench", "--list", "--json", "-"]) == 0
    listing = json.loads(capsys.readouterr().out)
    names = {row["name"]: row["plugin"] for row in listing["scenarios"]}
    assert "echo-burst" in names and names["echo-burst"] != "edgecore.bench.plugin"
    assert "lines" in {row["name"] for row in listing["reporters"]}

    out = tmp_path / "r.json"
    lines = tmp_path / "r.txt"
    args = ["bench", MODEL, "--scenario", "echo-burst", "--duration", "0.2", "--min-queries", "10", "--warmup", "2"]
    assert main(args + ["--json", str(out), "--report", f"lines={lines}"]) == 0
    result = json.loads(out.read_text())["results"][0]
    assert result["scenario"] == "echo-burst" and result["metrics"]["burst"] == 3
    assert result["samples"] == 3 * result["queries"]
    assert lines.read_text() == "echo-burst"


def test_a_runner_may_return_plain_metrics(tmp_path):
    class Plain:
        @hookimpl
        def edgecore_bench_scenarios(self):
            return [ScenarioSpec(name="count-inputs", runner=lambda ctx: {"inputs": len(ctx.graph.inputs)})]

    report = run_benchmark(MODEL, ["count-inputs"], plugin_manager=_plugin_manager(Plain()))
    result = report.result("count-inputs")
    assert isinstance(result, ScenarioResult) and result.metrics == {"inputs": 1} and result.latency is None


# -- the CLI and the documented JSON ------------------------------------------------------------------


def _documented_paths() -> list[str]:
    """Every field path in the first column of docs/benchmarks.md's tables, e.g.
    ``results[scenario=server].metrics.p99_ms``."""
    text = DOC.read_text()
    section = text[text.index("## JSON report") : text.index("## Plot")]
    return re.findall(r"^\| `([A-Za-z0-9_\[\]=.-]+)` \|", section, flags=re.MULTILINE)


def _check_path(document, path: str) -> list[str]:
    """Follow ``path``; return the places where a documented key is missing. A null on the way means
    the documented value does not apply here (the docs say when), and a filter matching nothing skips."""
    missing = []
    head, _, rest = path.partition(".")
    match = re.fullmatch(r"([A-Za-z0-9_-]+)(\[(?:scenario=([a-z-]+))?\])?", head)
    key, is_list, scenario = match.group(1), match.group(2), match.group(3)
    if not isinstance(document, dict) or key not in document:
        return [path]
    value = document[key]
    if value is None:
        return []
    items = [value] if not is_list else [v for v in value if scenario is None or v.get("scenario") == scenario]
    for item in items:
        if rest:
            missing += [f"{key}.{m}" for m in _check_path(item, rest)]
    return missing


def test_docs_document_the_json_fields():
    paths = _documented_paths()
    assert len(paths) > 60
    for key in ("schema", "machine.cpu", "results[].latency_ms.p99", "results[scenario=server].metrics.p99_ms"):
        assert key in paths


def test_server_command_writes_every_documented_field_and_a_plot(third_party_pm, tmp_path):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    args = ["bench", MODEL, "--scenario", "server", "--target-qps", "200", "--duration", "0.3", "--min-queries", "20"]
    assert main(args + ["--warmup", "3", "--baseline", "--json", str(out), "--plot", str(png)]) == 0
    document = json.loads(out.read_text())
    missing = [m for path in _documented_paths() for m in _check_path(document, path)]
    assert not missing, f"documented but absent: {missing}"
    result = document["results"][0]
    assert result["scenario"] == "server" and result["metrics"]["target_qps"] == 200
    assert result["latency_ms"]["p99"] >= result["latency_ms"]["p50"] > 0
    assert sum(result["histogram"]["counts"]) == result["queries"]
    assert result["baseline"]["ratio"]["p99"] is not None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_report_json_is_plain_json_and_markdown_a_table(pm, tmp_path):
    report = run_benchmark(MODEL, ["single-stream"], settings=BenchSettings(**QUICK), plugin_manager=pm)
    document = to_json(report)
    assert json.loads(json.dumps(document)) == document
    assert document["schema"] == "edgecore.bench/1"
    assert document["machine"]["runtimes"]["onnxruntime"]
    registry.get_reporter(pm, "markdown").write(report, tmp_path / "r.md")
    lines = (tmp_path / "r.md").read_text().splitlines()
    assert lines[2].startswith("| scenario | batch |") and lines[4].startswith("| single-stream | 1 |")


def test_cli_usage_errors_exit_2(capsys):
    assert main(["bench"]) == 2
    assert main(["bench", MODEL, "--find-peak"]) == 2
    assert "latency_bound_ms" in capsys.readouterr().err
