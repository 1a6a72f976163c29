"""The profiler wired into the real engine: built-in spans, per-op merging, export, the viewer.

Every test records into the process-wide profiler (the one the engine uses) and stops its session
at teardown, pass or fail.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
import threading

import numpy as np
import pytest

from edgecore import Engine, EngineConfig
from edgecore.profiling import get_profiler
from edgecore.profiling.export import load_schema
from edgecore.profiling.viewer import load_trace, render_text, summarize

jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("edgecore_cpu_simd")

MODEL = "zoo:mobilenet_v2_tiny"
CONFIG = EngineConfig(backend="cpu_simd", num_threads=1)


@pytest.fixture
def profiler():
    p = get_profiler()
    assert not p.active, "a previous test left a profiling session running"
    yield p
    if p.active:
        p.stop_global_session()
    for name in p.session_names():
        p.discard_session(name)


def feeds_for(engine: Engine, batch: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        spec.name: rng.standard_normal((batch, *[d if isinstance(d, int) else 1 for d in spec.shape[1:]]))
        .astype(spec.dtype.numpy)
        for spec in engine.inputs
    }


def export(profiler, name: str, tmp_path) -> dict:
    path = tmp_path / f"{name}.json"
    profiler.export_session_as_json(name, path)
    trace = json.loads(path.read_text())
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(trace)
    return trace


def spans(trace: dict, name: str | None = None, cat: str | None = None) -> list[dict]:
    return [
        e for e in trace["traceEvents"]
        if e["ph"] == "X" and (name is None or e["name"] == name) and (cat is None or e["cat"] == cat)
    ]


def inside(child: dict, parent: dict) -> bool:
    return parent["ts"] <= child["ts"] and child["ts"] + child["dur"] <= parent["ts"] + parent["dur"] + 1e-3


def test_trace_of_100_requests_validates_and_shows_every_section_of_the_seed_example(profiler, tmp_path):
    profiler.start_global_session("inference_session")
    with Engine(CONFIG).load(MODEL) as engine:
        feeds = feeds_for(engine)
        for _ in range(100):
            engine.run(feeds)
        stats = engine.stats()
    profiler.stop_global_session()
    trace = export(profiler, "inference_session", tmp_path)

    totals, executes = spans(trace, "inference_total"), spans(trace, "backend_execute")
    assert len(totals) == len(executes) == 100 == stats.total_inferences
    assert len(spans(trace, "model_load")) == 1 and len(spans(trace, "compile")) == 1
    assert {e["cat"] for e in totals} == {"request"} and {e["cat"] for e in executes} == {"batch"}
    thread_names = {e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    main_tid = threading.get_native_id()
    for total, execute in zip(sorted(totals, key=lambda e: e["ts"]), sorted(executes, key=lambda e: e["ts"])):
        for event in (total, execute):  # request id, batch id and size, backend, thread
            assert {"request_id", "batch_id", "batch_size", "backend", "model"} <= set(event["args"])
            assert event["args"]["backend"] == "cpu_simd" and event["args"]["batch_size"] == 1
            assert event["tid"] == main_tid and thread_names[main_tid] == threading.current_thread().name
        assert execute["args"]["request_id"] == total["args"]["request_id"]
        assert inside(execute, total)
    assert len({e["args"]["request_id"] for e in totals}) == 100
    assert len({e["args"]["batch_id"] for e in executes}) == 100

    summary = summarize(load_trace(tmp_path / "inference_session.json"), top=5)
    assert summary.session == "inference_session" and summary.total_requests == 100
    assert summary.total_events == len([e for e in trace["traceEvents"] if e["ph"] != "M"])
    counts = {s.name: s.count for s in summary.stages}
    assert counts["inference_total"] == counts["backend_execute"] == 100 and counts["model_load"] == 1
    assert [(b.stage, b.backend, b.count) for b in summary.backend] == [("backend_execute", "cpu_simd", 100)]
    text = render_text(summary, path="trace.json")
    for section in ("Analyzing trace file: trace.json", "TRACE SESSION SUMMARY", "Session Information:",
                    "Name: inference_session", "Total Requests: 100", f"Total Events: {summary.total_events}",
                    "Duration:", "Top 5 Slowest Stages (by average time):", "Count", "Avg (ms)", "P99 (ms)",
                    "Total (ms)", "Backend Execution Summary:", "Backend Stage", "Trace analysis complete!"):
        assert section in text, section

    # The filters change the figures: one stage, then the first half of the trace.
    only = summarize(load_trace(tmp_path / "inference_session.json"), stage="backend_execute")
    assert [s.name for s in only.stages] == ["backend_execute"] and only.total_requests == 100
    starts = sorted(e["ts"] for e in totals)
    t0 = min(e["ts"] for e in trace["traceEvents"] if e["ph"] != "M")
    start_ms, end_ms = (starts[0] - t0 - 1) / 1000.0, ((starts[49] + starts[50]) / 2 - t0) / 1000.0
    half = summarize(load_trace(tmp_path / "inference_session.json"), start_ms=start_ms, end_ms=end_ms)
    assert {s.name: s.count for s in half.stages}["inference_total"] == 50


def test_no_session_records_nothing_and_engine_results_do_not_change(profiler):
    with Engine(CONFIG).load(MODEL) as engine:
        feeds = feeds_for(engine)
        plain = engine.run(feeds)
        profiler.start_global_session("traced")
        traced = engine.run(feeds)
        data = profiler.stop_global_session()
        after = engine.run(feeds)
        assert engine.stats().total_inferences == 3
    for name in plain:
        np.testing.assert_array_equal(plain[name], traced[name])
        np.testing.assert_array_equal(plain[name], after[name])
    assert sorted(e[1] for e in data.events) == ["backend_execute", "inference_total"]


def test_failed_request_span_says_why(profiler):
    from edgecore.errors import InvalidInputError

    with Engine(CONFIG).load(MODEL) as engine:
        profiler.start_global_session("bad")
        with pytest.raises(InvalidInputError):
            engine.run({"nope": np.zeros(1, np.float32)})
        data = profiler.stop_global_session()
    (event,) = data.events
    assert event[1] == "inference_total" and event[6]["error"] == "InvalidInputError"


def test_scheduler_batch_spans_carry_batch_fields(profiler, tmp_path):
    config = EngineConfig(backend="cpu_simd", num_threads=1, max_batch_size=4, max_queue_delay_us=20_000,
                          adaptive_batching=False)
    with Engine(config).load(MODEL) as engine:
        feeds = feeds_for(engine)
        profiler.start_global_session("batched")
        futures = [engine.submit(feeds) for _ in range(8)]
        for f in futures:
            f.result(timeout=60)
        profiler.stop_global_session()
    trace = export(profiler, "batched", tmp_path)
    executes = spans(trace, "backend_execute")
    assert sum(e["args"]["batch_size"] for e in executes) == 8
    request_ids = set()
    for execute in executes:
        args = execute["args"]
        assert args["backend"] == "cpu_simd" and len(args["request_ids"]) == args["requests"] == args["batch_size"]
        request_ids.update(args["request_ids"])
        same_batch = [e for e in spans(trace) if e["args"].get("batch_id") == args["batch_id"]]
        names = {e["name"] for e in same_batch}
        assert {"queue_wait", "backend_execute", "output_split", "inference_total"} <= names
        if args["batch_size"] > 1:
            assert "batch_assemble" in names
        for e in same_batch:
            assert e["args"]["batch_size"] == args["batch_size"] and e["args"]["backend"] == "cpu_simd"
    totals = spans(trace, "inference_total")
    assert {e["args"]["request_id"] for e in totals} == request_ids and len(request_ids) == 8
    assert summarize(load_trace(tmp_path / "batched.json")).total_requests == 8


def test_request_ids_are_distinct_across_engines(profiler):
    with Engine(CONFIG).load(MODEL) as a, Engine(CONFIG).load(MODEL) as b:
        feeds = feeds_for(a)
        profiler.start_global_session("two")
        for _ in range(3):
            a.run(feeds)
            b.run(feeds)
        b.submit(feeds).result(timeout=60)
        data = profiler.stop_global_session()
    ids = [e[5] for e in data.events if e[1] == "inference_total"]
    assert len(ids) == len(set(ids)) == 7


def _profile_files() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), f"edgecore-ort-profile-{os.getpid()}-*")))


def test_profile_ops_merges_onnxruntime_kernels_under_backend_execute(profiler, tmp_path):
    before = _profile_files()
    with Engine(EngineConfig(backend="cpu_simd", num_threads=1, profile_ops=True)).load(MODEL) as engine:
        feeds = feeds_for(engine)
        engine.run(feeds)  # outside any session: ORT records it, the merge must leave it out
        for round_ in ("ops-1", "ops-2"):  # the second session gets kernels too (fresh ORT session)
            profiler.start_global_session(round_)
            for _ in range(3):
                engine.run(feeds)
            engine.submit(feeds).result(timeout=60)  # the scheduler's worker thread
            profiler.stop_global_session()
            trace = export(profiler, round_, tmp_path)
            parents = spans(trace, "backend_execute")
            runs = spans(trace, "model_run", cat="backend")
            ops = spans(trace, cat="op")
            assert len(parents) == len(runs) == 4 and len(ops) >= 4 * 10
            for child in runs + ops:
                (parent,) = [p for p in parents if p["args"]["batch_id"] == child["args"]["batch_id"]]
                assert child["tid"] == parent["tid"] and inside(child, parent)
                assert child["args"]["backend"] == "cpu_simd"
            assert {o["args"]["op_type"] for o in ops} >= {"Conv"}
            summary = summarize(load_trace(tmp_path / f"{round_}.json"))
            assert summary.ops and summary.ops[0].op_type == "Conv"
            assert {b.stage for b in summary.backend} == {"backend_execute", "model_run"}
        # closing while a session records merges what ran so far
        profiler.start_global_session("closing")
        engine.run(feeds)
    data = profiler.stop_global_session()
    assert sum(1 for e in data.events if e[1] == "model_run") == 1
    assert _profile_files() == before  # every profile file was deleted


def test_model_life_spans_and_optimize_passes(profiler, tmp_path):
    from edgecore.optimize import OptimizationConfig

    profiler.start_global_session("life")
    with Engine(CONFIG).load(MODEL) as engine:
        report = engine.optimize(OptimizationConfig(num_samples=2))
    profiler.stop_global_session()
    trace = export(profiler, "life", tmp_path)
    passes = [e for e in spans(trace) if e["name"].startswith("optimize/")]
    assert report.passes and passes
    assert [e["name"] for e in passes] == [f"optimize/{p.name}" for p in report.passes]
    assert all(e["cat"] == "model" and e["args"]["status"] == p.status for e, p in zip(passes, report.passes))
    loads, compiles = spans(trace, "model_load"), spans(trace, "compile")
    assert loads and compiles and {e["cat"] for e in loads + compiles} == {"model"}
    assert all(e["args"]["backend"] == "cpu_simd" for e in compiles)


def test_openvino_runs_show_in_the_backend_summary(profiler, tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("edgecore_openvino_npu")
    config = EngineConfig(backend="openvino", device="cpu", num_threads=1, profile_ops=True)
    with Engine(config).load(MODEL) as engine:
        feeds = feeds_for(engine)
        engine.run(feeds)  # the first run of a shape probes; time the steady ones
        profiler.start_global_session("openvino")
        for _ in range(3):
            engine.run(feeds)
        profiler.stop_global_session()
    trace = export(profiler, "openvino", tmp_path)
    parents, infers = spans(trace, "backend_execute"), spans(trace, "openvino_infer")
    assert len(parents) == len(infers) == 3 and {e["cat"] for e in infers} == {"backend"}
    for child in infers + spans(trace, cat="op"):
        assert any(inside(child, p) and child["tid"] == p["tid"] for p in parents)
    summary = summarize(load_trace(tmp_path / "openvino.json"))
    rows = {(b.stage, b.backend): b.count for b in summary.backend}
    assert rows == {("backend_execute", "openvino"): 3, ("openvino_infer", "openvino"): 3}
    assert summary.ops
