"""The profiler: sessions, the ring buffer and its drop count, threads, export, backend merging."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from edgecore.profiling import (
    BackendOp,
    BackendRun,
    Profiler,
    ProfilerSessionError,
    Span,
    Window,
    layout_sequential,
    runs_to_spans,
)
from edgecore.profiling.export import load_schema, session_to_chrome_trace

jsonschema = pytest.importorskip("jsonschema")


def validate(trace: dict) -> None:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(trace)


def timed_events(trace: dict) -> list[dict]:
    return [e for e in trace["traceEvents"] if e["ph"] != "M"]


def test_session_lifecycle_and_errors():
    p = Profiler()
    assert not p.active
    with pytest.raises(ProfilerSessionError):
        p.stop_global_session()
    p.start_global_session("s1")
    assert p.active
    with pytest.raises(ProfilerSessionError, match="s1"):
        p.start_global_session("s2")
    data = p.stop_global_session()
    assert not p.active and data.name == "s1" and data.events == () and data.dropped == 0
    assert p.session_names() == ["s1"]
    with pytest.raises(ProfilerSessionError, match="nope"):
        p.session("nope")
    p.discard_session("s1")
    assert p.session_names() == []


def test_get_instance_is_a_singleton():
    assert Profiler.get_instance() is Profiler.get_instance()


def test_nothing_is_recorded_without_a_session():
    p = Profiler()
    p.record("backend_execute", 0, 10)
    p.mark_event(1, "x", 3)
    scope = p.scoped_event(1, "x")
    assert scope is p.scoped_event(2, "y")  # one shared no-op object: nothing allocated per call
    with scope:
        pass
    assert p.add_events([Span("op", 0, 1)]) == 0

    @p.profiled("f")
    def f(x):
        return x + 1

    assert f(1) == 2
    p.start_global_session("s")
    assert p.stop_global_session().events == ()


def test_recorded_times_become_microseconds_from_session_start():
    p = Profiler()
    p.start_global_session("s")
    t0 = p._session.start_ns
    p.record("backend_execute", t0 + 1_000_000, t0 + 3_500_000, request_id=7,
             args={"batch_id": 3, "batch_size": 2, "backend": "cpu"})
    p.mark_event(7, "inference_start")
    p.stop_global_session()
    trace = session_to_chrome_trace(p.session("s"))
    validate(trace)
    x = [e for e in timed_events(trace) if e["ph"] == "X"][0]
    assert x["ts"] == 1000.0 and x["dur"] == 2500.0
    assert x["args"] == {"batch_id": 3, "batch_size": 2, "backend": "cpu", "request_id": 7}
    assert x["cat"] == "batch" and x["tid"] == threading.get_native_id()
    instant = [e for e in timed_events(trace) if e["ph"] == "i"][0]
    assert instant["s"] == "t" and instant["args"] == {"request_id": 7}
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"}
    assert threading.current_thread().name in names
    assert trace["displayTimeUnit"] == "ms"
    assert trace["otherData"]["session"] == "s" and trace["otherData"]["dropped_events"] == 0


def test_ring_buffer_keeps_newest_and_reports_drops(tmp_path, caplog):
    p = Profiler()
    p.initialize(capacity=10)
    p.start_global_session("small")
    for i in range(25):
        p.record("inference_total", i, i + 1, request_id=i)
    with caplog.at_level(logging.WARNING, logger="edgecore"):
        data = p.stop_global_session()
    assert (data.recorded, data.dropped, len(data.events)) == (25, 15, 10)
    assert [ev[5] for ev in data.events] == list(range(15, 25))
    assert "dropped 15 of 25" in caplog.text
    path = p.export_session_as_json("small", tmp_path / "t.json")
    trace = json.loads(path.read_text())
    validate(trace)
    assert trace["otherData"]["dropped_events"] == 15 and trace["otherData"]["recorded_events"] == 25
    assert trace["otherData"]["capacity"] == 10


def test_invalid_capacity():
    with pytest.raises(ValueError, match="capacity"):
        Profiler().initialize(capacity=0)


def test_many_threads_lose_nothing_and_count_drops_exactly():
    def hammer(p: Profiler, n: int) -> None:
        for i in range(n):
            p.record("backend_execute", i, i + 1)
            p.mark_event(i, "m")
            with p.scoped_event(i, "s"):
                pass

    for capacity, expect_dropped in ((1_000_000, 0), (1000, 4 * 3 * 2000 - 1000)):
        p = Profiler(capacity=capacity)
        p.start_global_session("t")
        threads = [threading.Thread(target=hammer, args=(p, 2000), name=f"w{i}") for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        data = p.stop_global_session()
        assert data.recorded == 4 * 3 * 2000
        assert data.dropped == expect_dropped
        if not expect_dropped:
            trace = session_to_chrome_trace(data)
            tids = {e["tid"] for e in timed_events(trace)}
            assert len(tids) == 4
            names = {e["args"]["name"] for e in trace["traceEvents"] if e.get("name") == "thread_name"}
            assert names == {"w0", "w1", "w2", "w3"}


def test_scoped_event_decorator_counter_and_errors():
    p = Profiler()
    source = p.register_event_source("custom_metric", unit="items")
    assert p.register_event_source("custom_metric") is source

    @p.profiled("work")
    def work():
        time.sleep(0.001)

    p.start_global_session("s")
    work()
    with p.scoped_event(5, "model_execution", note="hi"):
        pass
    with pytest.raises(KeyError):
        with p.scoped_event(6, "failing"):
            raise KeyError("x")
    p.mark_event(5, "custom_metric", 42)
    p.mark_event(5, "plain", "text")
    p.stop_global_session()
    trace = session_to_chrome_trace(p.session("s"))
    validate(trace)
    by_name = {e["name"]: e for e in timed_events(trace)}
    assert by_name["work"]["dur"] >= 1000 and by_name["work"]["cat"] == "user"
    assert by_name["model_execution"]["args"] == {"note": "hi", "request_id": 5}
    assert by_name["failing"]["args"]["error"] == "KeyError"
    assert by_name["custom_metric"]["ph"] == "C" and by_name["custom_metric"]["args"] == {"custom_metric": 42}
    assert by_name["plain"]["ph"] == "i" and by_name["plain"]["args"]["value"] == "text"
    assert trace["otherData"]["event_sources"] == [{"name": "custom_metric", "unit": "items", "description": ""}]


def test_snapshot_of_active_session_and_events_before_start():
    p = Profiler()
    p.start_global_session("live")
    t0 = p._session.start_ns
    p.record("queue_wait", t0 - 2_000_000, t0 + 1_000_000)  # the request was queued before the session
    snap = p.session("live")
    assert snap.active and len(snap.events) == 1
    trace = session_to_chrome_trace(snap)
    validate(trace)
    assert timed_events(trace)[0]["ts"] == 0.0 and timed_events(trace)[0]["dur"] == 3000.0
    p.stop_global_session()


def test_stage_categories():
    p = Profiler()
    p.start_global_session("s")
    for name in ("model_load", "optimize/fuse_bn", "compile", "inference_total", "queue_wait", "batch_assemble",
                 "backend_execute", "output_split", "mine"):
        p.record(name, 0, 1)
    p.stop_global_session()
    cats = {e["name"]: e["cat"] for e in timed_events(session_to_chrome_trace(p.session("s")))}
    assert cats == {"model_load": "model", "optimize/fuse_bn": "model", "compile": "model",
                    "inference_total": "request", "queue_wait": "request", "batch_assemble": "batch",
                    "backend_execute": "batch", "output_split": "batch", "mine": "user"}


def test_layout_sequential_fits_inside_the_window():
    w = Window(start_ns=1_000, end_ns=11_000, tid=9, request_id=1, args={"batch_id": 4, "other": 1})
    spans = layout_sequential([("conv", "Convolution", 2.0), ("relu", "ReLU", 3.0)], w, backend="ov", runtime="openvino")
    assert [(s.start_ns, s.end_ns) for s in spans] == [(1_000, 3_000), (3_000, 6_000)]
    assert spans[0].args == {"batch_id": 4, "op_type": "Convolution", "runtime": "openvino", "backend": "ov"}
    squeezed = layout_sequential([("a", "A", 8.0), ("b", "B", 12.0)], w)  # 20 µs into a 10 µs window
    assert [(s.start_ns, s.end_ns) for s in squeezed] == [(1_000, 5_000), (5_000, 11_000)]


# --- backend per-op merging (runtime-neutral; onnxruntime's reader is tested in plugins/cpu_simd) ----


def synthetic_runs(run_starts_us, run_dur_us=100, tid=1):
    """Runs on a runtime clock (ns): each has kernels a (10 µs at +20) and b (30 µs at +50)."""
    runs = []
    for t in run_starts_us:
        ops = tuple(
            BackendOp(name, (t + off) * 1000.0, (t + off + dur) * 1000.0, op_type=op, tid=tid,
                      args={"provider": "P"})
            for name, op, off, dur in (("a", "Conv", 20, 10), ("b", "Relu", 50, 30))
        )
        runs.append(BackendRun(t * 1000.0, (t + run_dur_us) * 1000.0, tid, ops))
    return runs


def test_merge_alignment_rules():
    runs = synthetic_runs([1000, 2000, 3000])
    # parents (perf ns): 1_000_000 + [1.1 ms, 2.1 ms]; the runtime clock's 0 is perf ns 1_000_000.
    windows = [Window(1_000_000 + 1_000_000 + k * 1_000_000 - 50_000, 1_000_000 + 1_150_000 + k * 1_000_000, 7,
                      request_id=k, args={"batch_id": k}) for k in range(2)]
    exact = runs_to_spans(runs, windows, clock_offset_ns=1_000_000, runtime="rt", backend="b1")
    got = [(s.name, s.start_ns, s.end_ns, s.request_id) for s in exact]
    assert got == [("model_run", 2_000_000, 2_100_000, 0), ("a", 2_020_000, 2_030_000, 0), ("b", 2_050_000, 2_080_000, 0),
                   ("model_run", 3_000_000, 3_100_000, 1), ("a", 3_020_000, 3_030_000, 1), ("b", 3_050_000, 3_080_000, 1)]
    assert exact[0].cat == "backend" and exact[0].args == {"batch_id": 0, "runtime": "rt", "backend": "b1"}
    assert exact[1].cat == "op" and exact[1].args == {"batch_id": 0, "op_type": "Conv", "provider": "P", "backend": "b1"}
    assert exact[1].tid == 7  # an op on the run's own thread goes on its parent's track
    # run 1 (ts 1000) happened before every parent and is left out. A clock 80 µs off puts the runs
    # 30 µs past their parents' ends: the offset is corrected by the median shift (-30 µs), uniformly.
    skewed = runs_to_spans(runs, windows, clock_offset_ns=1_000_000 + 80_000)
    assert [(s.start_ns, s.end_ns) for s in skewed] == [(s.start_ns + 50_000, s.end_ns + 50_000) for s in exact]
    # without a time base: newest runs with newest parents, each run ending with its parent.
    ordered = runs_to_spans(runs, windows, clock_offset_ns=None)
    assert [(s.name, s.start_ns, s.end_ns) for s in ordered if s.name == "model_run"] == [
        ("model_run", 2_050_000, 2_150_000), ("model_run", 3_050_000, 3_150_000)]
    assert {s.args["op_type"] for s in ordered if s.cat == "op"} == {"Conv", "Relu"}
    # a run longer than its parent is scaled into it.
    tight = runs_to_spans(runs[:1], [Window(0, 50_000, 1)])
    assert [(s.start_ns, s.end_ns) for s in tight] == [(0, 50_000), (10_000, 15_000), (25_000, 40_000)]


def test_merge_backend_runs_nests_children_in_the_matching_parents():
    p = Profiler()
    assert p.merge_backend_runs(synthetic_runs([0])) == 0  # no session: nothing merged
    p.start_global_session("m")
    t0 = time.perf_counter_ns()
    for k in range(2):  # two parents of this backend, 1 ms long, and one of another backend
        p.record("backend_execute", t0 + k * 2_000_000, t0 + k * 2_000_000 + 1_000_000, request_id=k, tid=5,
                 args={"batch_id": k, "backend": "mine"})
    p.record("backend_execute", t0 + 5_000_000, t0 + 6_000_000, tid=5, args={"backend": "other"})
    n = p.merge_backend_runs(synthetic_runs([0, 2000], tid=None), match={"backend": "mine"}, runtime="rt",
                             backend="mine", run_name="rt_run")
    assert n == 2 * 3  # a run span + 2 kernels per run
    data = p.stop_global_session()
    trace = session_to_chrome_trace(data)
    validate(trace)
    events = timed_events(trace)
    parents = [e for e in events if e["name"] == "backend_execute" and e["args"].get("backend") == "mine"]
    children = [e for e in events if e["name"] in ("rt_run", "a", "b")]
    assert {e["cat"] for e in children} == {"backend", "op"} and len(children) == 6
    for child in children:
        parent = next(q for q in parents if q["args"]["batch_id"] == child["args"]["batch_id"])
        assert child["tid"] == parent["tid"] and child["args"]["request_id"] == parent["args"]["request_id"]
        assert parent["ts"] <= child["ts"] and child["ts"] + child["dur"] <= parent["ts"] + parent["dur"] + 1e-3


def test_snapshots_while_other_threads_record():
    p = Profiler(capacity=500)
    p.start_global_session("busy")
    stop = threading.Event()

    def record():
        while not stop.is_set():
            p.record("backend_execute", 0, 1)

    threads = [threading.Thread(target=record) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            snap = p.session("busy")
            assert snap.active and snap.recorded >= len(snap.events)
        validate(session_to_chrome_trace(snap))
    finally:
        stop.set()
        for t in threads:
            t.join()
    data = p.stop_global_session()
    assert data.recorded == data.dropped + len(data.events)


def test_register_stage():
    from edgecore.profiling import STAGES, register_stage
    from edgecore.profiling.viewer import parse_trace, summarize

    register_stage("plugin_infer", "backend")
    register_stage("plugin_infer", "backend")  # same again: fine
    assert STAGES["plugin_infer"] == "backend"
    with pytest.raises(ValueError, match="already"):
        register_stage("plugin_infer", "user")
    with pytest.raises(ValueError, match="category"):
        register_stage("x", "nope")
    p = Profiler()
    p.start_global_session("s")
    p.record("backend_execute", 0, 4000, args={"backend": "ov"})
    p.record("plugin_infer", 1000, 3000, args={"backend": "ov"})
    p.stop_global_session()
    trace = session_to_chrome_trace(p.session("s"))
    validate(trace)
    rows = [(b.stage, b.backend, b.count) for b in summarize(parse_trace(trace)).backend]
    assert rows == [("backend_execute", "ov", 1), ("plugin_infer", "ov", 1)]
