"""The trace viewer against hand-made traces whose answers are known, and onnxruntime's own profiles."""

from __future__ import annotations

import argparse
import json
import time

import pytest

from edgecore.cli import trace as trace_cli
from edgecore.profiling import Profiler
from edgecore.profiling.viewer import load_trace, parse_trace, percentile, render_text, summarize, summary_to_dict

MS = 1000.0  # µs per ms


def x(name, ts_ms, dur_ms, cat="request", tid=1, **args):
    return {"name": name, "cat": cat, "ph": "X", "ts": ts_ms * MS, "dur": dur_ms * MS, "pid": 1, "tid": tid,
            "args": args}


def hand_made() -> dict:
    """model_load 5 ms at 0; then 10 requests, request i at (10 + 20 i) ms:
    inference_total lasts (i + 1) ms, backend_execute (i + 1) / 2 ms, with one Conv (0.25 ms)
    and one Relu (0.05 ms) kernel inside each backend_execute."""
    events = [{"name": "process_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": "edgecore: known"}},
              x("model_load", 0, 5, cat="model")]
    for i in range(10):
        t = 10 + 20 * i
        events.append(x("inference_total", t, i + 1, request_id=i))
        events.append(x("backend_execute", t, (i + 1) / 2, cat="batch", request_id=i, backend="cpu_simd"))
        events.append(x("conv0", t, 0.25, cat="op", request_id=i, op_type="Conv"))
        events.append(x("relu0", t + 0.25, 0.05, cat="op", request_id=i, op_type="Relu"))
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"format": "edgecore-trace", "session": "known", "dropped_events": 0}}


def stage(summary, name):
    return next(s for s in summary.stages if s.name == name)


def test_percentile_is_nearest_rank():
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([5.0], 99) == 5.0
    assert percentile(list(range(1, 11)), 99) == 10
    assert percentile(list(range(1, 11)), 50) == 5
    assert percentile([], 99) == 0.0


def test_known_answers_without_filters():
    s = summarize(parse_trace(hand_made()))
    assert s.session == "known" and s.source == "edgecore"
    assert s.total_requests == 10
    assert s.total_events == 1 + 4 * 10
    assert s.duration_ms == pytest.approx(190 + 10)  # last request starts at 190 ms and lasts 10 ms
    assert [st.name for st in s.stages] == ["inference_total", "model_load", "backend_execute"]
    it = stage(s, "inference_total")
    assert (it.count, it.avg_ms, it.p99_ms, it.total_ms) == (10, pytest.approx(5.5), pytest.approx(10), pytest.approx(55))
    be = stage(s, "backend_execute")
    assert (be.count, be.avg_ms, be.p99_ms, be.total_ms) == (10, pytest.approx(2.75), pytest.approx(5), pytest.approx(27.5))
    ml = stage(s, "model_load")
    assert (ml.count, ml.avg_ms, ml.p99_ms, ml.total_ms) == (1, 5, 5, 5)
    [b] = s.backend
    assert (b.stage, b.backend, b.count, b.total_ms) == ("backend_execute", "cpu_simd", 10, pytest.approx(27.5))
    assert [(o.op_type, o.count) for o in s.ops] == [("Conv", 10), ("Relu", 10)]
    assert s.ops[0].total_ms == pytest.approx(2.5) and s.ops[0].percent == pytest.approx(2.5 / 3.0 * 100)


def test_stage_filter_changes_the_figures():
    s = summarize(parse_trace(hand_made()), stage="backend_execute")
    assert s.total_events == 10 and s.total_requests == 10
    assert [st.name for st in s.stages] == ["backend_execute"] and s.ops == ()
    assert s.duration_ms == pytest.approx(180 + 5)  # 10 .. 190 + 5 ms
    ops = summarize(parse_trace(hand_made()), stage="Conv")
    assert ops.total_events == 10 and ops.stages == () and [o.op_type for o in ops.ops] == ["Conv"]


def test_time_window_changes_the_figures():
    # [40, 100) ms holds the starts of requests 2, 3 and 4 (at 50, 70, 90 ms).
    s = summarize(parse_trace(hand_made()), start_ms=40, end_ms=100)
    assert s.total_requests == 3 and s.total_events == 12
    it = stage(s, "inference_total")
    assert (it.count, it.avg_ms, it.p99_ms, it.total_ms) == (3, pytest.approx(4), pytest.approx(5), pytest.approx(12))
    assert "model_load" not in [st.name for st in s.stages]
    assert s.duration_ms == pytest.approx(95 - 50)
    only_start = summarize(parse_trace(hand_made()), start_ms=150)  # requests 7, 8, 9
    assert only_start.total_requests == 3 and stage(only_start, "inference_total").total_ms == pytest.approx(27)
    both = summarize(parse_trace(hand_made()), stage="inference_total", start_ms=40, end_ms=100)
    assert both.total_events == 3 and both.stages[0].total_ms == pytest.approx(12)
    with pytest.raises(ValueError):
        summarize(parse_trace(hand_made()), start_ms=10, end_ms=5)


def test_top_limits_rows():
    s = summarize(parse_trace(hand_made()), top=1)
    assert [st.name for st in s.stages] == ["inference_total"] and [o.op_type for o in s.ops] == ["Conv"]


def hundred_request_trace(tmp_path):
    """A trace of 100 requests recorded through the profiler, with every built-in stage."""
    p = Profiler()
    p.start_global_session("inference_session")
    t = time.perf_counter_ns()
    p.record("model_load", t, t + 5_000_000)
    p.record("compile", t + 5_000_000, t + 7_000_000)
    t += 7_000_000
    for rid in range(100):
        batch = {"batch_id": rid, "batch_size": 1, "backend": "cpu_simd"}
        p.record("queue_wait", t, t + 100_000, request_id=rid, args=batch)
        p.record("batch_assemble", t + 100_000, t + 150_000, request_id=rid, args=batch)
        p.record("backend_execute", t + 150_000, t + 8_450_000, request_id=rid, args=batch)
        p.add_events([("conv0", t + 200_000, t + 4_000_000, "op", rid, {"op_type": "Conv"})])
        p.record("output_split", t + 8_450_000, t + 8_500_000, request_id=rid, args=batch)
        p.record("inference_total", t, t + 12_500_000, request_id=rid)
        t += 12_500_000
    p.stop_global_session()
    return p.export_session_as_json("inference_session", tmp_path / "trace.json")


def test_hundred_requests_show_every_section_of_the_seed_example(tmp_path):
    path = hundred_request_trace(tmp_path)
    s = summarize(load_trace(path))
    assert s.total_requests == 100 and s.total_events == 2 + 6 * 100
    assert stage(s, "inference_total").avg_ms == pytest.approx(12.5)
    assert stage(s, "backend_execute").total_ms == pytest.approx(830)
    text = render_text(s, path=str(path))
    for needle in ("TRACE SESSION SUMMARY", "Session Information:", "Name: inference_session",
                   "Total Requests: 100", "Total Events: 602", "Duration: 1257.00 ms",
                   "Top 5 Slowest Stages (by average time):", "Stage", "Count", "Avg (ms)", "P99 (ms)", "Total (ms)",
                   "Backend Execution Summary:", "Backend Stage", "Top 5 Operators (by total time):", "Conv",
                   "Trace analysis complete!"):
        assert needle in text, needle
    row = next(line for line in text.splitlines() if line.strip().startswith("inference_total"))
    assert row.split()[1:] == ["100", "12.500", "12.500", "1250.000"]
    row = next(line for line in text.splitlines() if line.strip().startswith("backend_execute") and "cpu_simd" in line)
    assert row.split()[1:] == ["cpu_simd", "100", "8.300", "830.000"]


def run_cli(argv, capsys):
    parser = argparse.ArgumentParser(prog="edgecore")
    trace_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["trace", *argv])
    rc = args.func(args)
    return rc, capsys.readouterr()


def test_cli_json_matches_the_library(tmp_path, capsys):
    path = tmp_path / "known.json"
    path.write_text(json.dumps(hand_made()))
    rc, out = run_cli([str(path), "--json", "--start", "40", "--end", "100", "--top", "3"], capsys)
    assert rc == 0
    data = json.loads(out.out)
    expected = summary_to_dict(summarize(load_trace(path), start_ms=40, end_ms=100, top=3))
    assert {k: v for k, v in data.items() if k != "file"} == json.loads(json.dumps(expected))
    assert data["total_requests"] == 3


def test_cli_text_and_errors(tmp_path, capsys):
    path = tmp_path / "known.json"
    path.write_text(json.dumps(hand_made()))
    rc, out = run_cli([str(path), "--stage", "backend_execute"], capsys)
    assert rc == 0 and "Total Events: 10" in out.out and "Backend Execution Summary" in out.out
    rc, out = run_cli([str(tmp_path / "missing.json")], capsys)
    assert rc == 1 and "cannot read" in out.err
    (tmp_path / "bad.json").write_text("{not json")
    assert run_cli([str(tmp_path / "bad.json")], capsys)[0] == 1
    assert run_cli([str(path), "--start", "5", "--end", "1"], capsys)[0] == 2
    with pytest.raises(SystemExit) as exc:
        run_cli([str(path), "--top", "0"], capsys)
    assert exc.value.code == 2


def test_begin_end_pairs_and_bare_arrays(tmp_path):
    events = [{"name": "a", "ph": "B", "ts": 0, "pid": 1, "tid": 1},
              {"name": "a", "ph": "E", "ts": 2000, "pid": 1, "tid": 1},
              {"name": "b", "ph": "i", "ts": 500, "pid": 1, "tid": 1, "s": "t"}]
    path = tmp_path / "array.json"
    path.write_text(json.dumps(events)[:-1] + ",\n")  # unterminated, as the array format allows
    s = summarize(load_trace(path))
    assert s.source == "chrome" and s.total_events == 2 and stage(s, "a").avg_ms == pytest.approx(2)


def test_reads_onnxruntime_profiles(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    import numpy as np
    from onnx import TensorProto, helper

    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Relu", ["x"], ["t"], name="relu0"), helper.make_node("Add", ["t", "t"], ["y"], name="add0")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x_info], [y_info]), opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "ort")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for _ in range(4):
        sess.run(None, {"x": np.ones((1, 4), np.float32)})
    path = sess.end_profiling()

    raw = json.load(open(path))
    s = summarize(load_trace(path))
    assert s.source == "onnxruntime"
    assert s.total_requests == 4
    assert s.total_events == len(raw)
    model_run = stage(s, "model_run")
    assert model_run.count == 4
    assert model_run.total_ms == pytest.approx(sum(e["dur"] for e in raw if e["name"] == "model_run") / 1000)
    assert {o.op_type: o.count for o in s.ops} == {"Relu": 4, "Add": 4}
    assert [(b.stage, b.backend, b.count) for b in s.backend] == [("model_run", "onnxruntime", 4)]
    text = render_text(s, path=path)
    assert "Top 5 Operators (by total time):" in text and "Relu" in text
