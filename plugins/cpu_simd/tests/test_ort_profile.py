"""onnxruntime's profile, read by cpu_simd into edgecore's runtime-neutral records and merged as
children of ``backend_execute`` (core's profiler knows no runtime format)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgecore.profiling import Profiler, Window, runs_to_spans
from edgecore.profiling.export import session_to_chrome_trace

ort = pytest.importorskip("onnxruntime")
ort_profile = pytest.importorskip("edgecore_cpu_simd.ort_profile")


def tiny_model_bytes() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Relu", ["x"], ["t"], name="relu0"), helper.make_node("Add", ["t", "t"], ["y"], name="add0")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


@pytest.fixture
def ort_session(tmp_path):
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "ort")
    return ort.InferenceSession(tiny_model_bytes(), so, providers=["CPUExecutionProvider"])


def run_profiled(p: Profiler, sess, n: int) -> None:
    feed = {"x": np.ones((1, 4), np.float32)}
    for i in range(n):
        start = time.perf_counter_ns()
        sess.run(None, feed)
        p.record("backend_execute", start, time.perf_counter_ns(), request_id=i,
                 args={"batch_id": i, "batch_size": 1, "backend": "cpu_simd"})


def timed_events(trace: dict) -> list[dict]:
    return [e for e in trace["traceEvents"] if e["ph"] != "M"]


@pytest.mark.parametrize("with_time_base", [True, False])
def test_ort_ops_become_children_of_backend_execute(ort_session, with_time_base):
    p = Profiler()
    sess = ort_session
    base = sess.get_profiling_start_time_ns()
    run_profiled(p, sess, 2)  # runs before the session: must not be merged
    p.start_global_session("ops")
    run_profiled(p, sess, 3)

    def flush(prof: Profiler) -> None:
        ort_profile.merge_ort_profile(prof, sess.end_profiling(), time_base_unix_ns=base if with_time_base else None,
                                      backend="cpu_simd")

    p.add_flush_hook(flush)
    data = p.stop_global_session()
    p.remove_flush_hook(flush)
    events = timed_events(session_to_chrome_trace(data))
    parents = [e for e in events if e["name"] == "backend_execute"]
    runs = [e for e in events if e["name"] == "model_run"]
    ops = [e for e in events if e["cat"] == "op"]
    assert len(parents) == 3 and len(runs) == 3 and len(ops) == 6
    assert {r["args"]["runtime"] for r in runs} == {"onnxruntime"}
    assert sorted({o["args"]["op_type"] for o in ops}) == ["Add", "Relu"]
    assert {o["args"]["provider"] for o in ops} == {"CPUExecutionProvider"}
    for child in runs + ops:
        parent = next(q for q in parents if q["args"]["batch_id"] == child["args"]["batch_id"])
        assert child["tid"] == parent["tid"] and child["args"]["request_id"] == parent["args"]["request_id"]
        assert parent["ts"] <= child["ts"] and child["ts"] + child["dur"] <= parent["ts"] + parent["dur"] + 1e-3
    for parent in parents:  # kernels in execution order, Relu before Add, inside each run
        kids = sorted((o for o in ops if o["args"]["batch_id"] == parent["args"]["batch_id"]), key=lambda e: e["ts"])
        assert [k["args"]["op_type"] for k in kids] == ["Relu", "Add"]


def test_merge_filters_parents_by_args(ort_session):
    p = Profiler()
    assert ort_profile.merge_ort_profile(p, []) == 0  # no session
    p.start_global_session("m")
    run_profiled(p, ort_session, 2)
    p.record("backend_execute", 0, 10, args={"backend": "other"})
    n = ort_profile.merge_ort_profile(p, ort_session.end_profiling(), match={"backend": "cpu_simd"},
                                      time_base_unix_ns=ort_session.get_profiling_start_time_ns())
    assert n == 2 * 3  # model_run + 2 kernels per run
    assert ort_profile.merge_ort_profile(p, []) == 0
    p.stop_global_session()


def synthetic_profile(run_starts_us, run_dur_us=100):
    """An onnxruntime-shaped profile: each run has kernels a (10 µs at +20) and b (30 µs at +50)."""
    events = [{"cat": "Session", "name": "session_initialization", "ph": "X", "ts": 0, "dur": 5, "pid": 1, "tid": 1}]
    for t in run_starts_us:
        events.append({"cat": "Session", "name": "model_run", "ph": "X", "ts": t, "dur": run_dur_us, "pid": 1, "tid": 1})
        for name, op, off, dur in (("a", "Conv", 20, 10), ("b", "Relu", 50, 30)):
            events.append({"cat": "Node", "name": f"{name}_fence_before", "ph": "X", "ts": t + off, "dur": 0,
                           "pid": 1, "tid": 1, "args": {"op_name": op}})
            events.append({"cat": "Node", "name": f"{name}_kernel_time", "ph": "X", "ts": t + off, "dur": dur,
                           "pid": 1, "tid": 1, "args": {"op_name": op, "provider": "CPUExecutionProvider"}})
    return events


def test_split_ort_runs_reads_runs_and_kernels():
    runs = ort_profile.split_ort_runs(synthetic_profile([3000, 1000, 2000]))
    assert [r.start_ns for r in runs] == [1_000_000, 2_000_000, 3_000_000]  # oldest first, in ns
    assert [len(r.ops) for r in runs] == [2, 2, 2]  # fences are not kernels
    a, b = runs[0].ops
    assert (a.name, a.op_type, a.start_ns, a.end_ns, dict(a.args)) == (
        "a", "Conv", 1_020_000, 1_030_000, {"provider": "CPUExecutionProvider"})
    assert (b.name, b.op_type) == ("b", "Relu")
    windows = [Window(2_000_000, 2_100_000, 1, request_id=0, args={"batch_id": 0})]
    spans = runs_to_spans(runs, windows, clock_offset_ns=0, runtime="onnxruntime")
    assert [(s.name, s.start_ns, s.end_ns) for s in spans] == [
        ("model_run", 2_000_000, 2_100_000), ("a", 2_020_000, 2_030_000), ("b", 2_050_000, 2_080_000)]


def test_unterminated_profile_file_is_read(tmp_path):
    import json

    path = tmp_path / "ort.json"
    path.write_text(json.dumps(synthetic_profile([1000]))[:-1] + ",")  # "[{...},{...}," as ORT leaves it
    assert len(ort_profile.split_ort_runs(ort_profile.load_ort_profile(path))) == 1
    (tmp_path / "bad.json").write_text('{"traceEvents": 3}')
    with pytest.raises(ValueError, match="not an onnxruntime profile"):
        ort_profile.load_ort_profile(tmp_path / "bad.json")
