"""profile_ops: OpenVINO's per-operator timings reach the compiled model and the profiler's trace."""

from __future__ import annotations

from edgecore import Engine, EngineConfig
from edgecore.profiling import Profiler, get_profiler


def test_profiling_info_lists_executed_operators(zoo_graph, image_feeds):
    graph = zoo_graph("digits_cnn")
    with Engine(EngineConfig(backend="openvino", device="cpu", profile_ops=True)).load(graph) as engine:
        assert engine.compiled.profiling_info() == []  # nothing ran yet in this thread
        engine.run(image_feeds(graph, 2))
        timings = engine.compiled.profiling_info()
    executed = [t for t in timings if t.status == "EXECUTED"]
    assert executed, timings
    assert {"Convolution", "MaxPool"} & {t.op_type for t in executed}
    assert all(t.real_time_us >= 0 for t in executed)


def test_operator_spans_nest_in_the_infer_span(zoo_graph, image_feeds):
    graph = zoo_graph("digits_cnn")
    profiler: Profiler = get_profiler()
    with Engine(EngineConfig(backend="openvino", device="cpu", profile_ops=True)).load(graph) as engine:
        profiler.start_global_session("openvino-ops")
        try:
            engine.run(image_feeds(graph, 2))
        finally:
            data = profiler.stop_global_session()
    infer = [e for e in data.events if e[1] == "openvino_infer"]
    ops = [e for e in data.events if (e[6] or {}).get("runtime") == "openvino"]
    assert len(infer) == 1 and ops
    start, end = infer[0][3], infer[0][4]
    assert all(start <= e[3] <= e[4] <= end for e in ops)
    assert all(e[6]["backend"] == "openvino" and e[6]["op_type"] for e in ops)


def test_without_profile_ops_nothing_is_recorded(zoo_graph, image_feeds):
    graph = zoo_graph("digits_cnn")
    profiler = get_profiler()
    with Engine(EngineConfig(backend="openvino", device="cpu")).load(graph) as engine:
        profiler.start_global_session("openvino-quiet")
        try:
            engine.run(image_feeds(graph, 1))
        finally:
            data = profiler.stop_global_session()
        assert engine.compiled.profiling_info() == []
    assert not [e for e in data.events if e[1] == "openvino_infer"]
