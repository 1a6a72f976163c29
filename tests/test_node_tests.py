"""The node-test runner itself: ONNX's cases built at test time, compared as ONNX's runner compares,
and every outcome counted where it belongs."""

from __future__ import annotations

import numpy as np
import pytest

from edgecore.testing.node_tests import CaseResult, NodeCase, NodeTestReport, _compare, node_cases, run_node_tests, select


@pytest.fixture(scope="module")
def cases():
    return {c.name: c for c in node_cases()}


def test_cases_come_from_the_installed_onnx(cases):
    assert len(cases) > 1000
    abs_case = cases["test_abs"]
    assert abs_case.tensors_only and list(abs_case.feeds) == ["x"]
    np.testing.assert_array_equal(abs_case.expected[0], np.abs(abs_case.feeds["x"]))
    assert not cases["test_sequence_insert_at_back"].tensors_only  # sequences are out of edgecore's scope


def test_select_is_seeded_and_sorted(cases):
    every = list(cases.values())
    first, again, other = select(every, 25, seed=3), select(every, 25, seed=3), select(every, 25, seed=4)
    assert [c.name for c in first] == [c.name for c in again] == sorted(c.name for c in first)
    assert [c.name for c in first] != [c.name for c in other]
    assert len(select(every, None)) == len(every)


def _case(expected, rtol=1e-3, atol=1e-7) -> NodeCase:
    return NodeCase(name="c", model=None, feeds={}, expected=(np.asarray(expected),), rtol=rtol, atol=atol, tensors_only=True)


def test_compare_as_onnx_runner_does():
    assert _compare(_case(np.float32([1, np.nan])), [np.float32([1.0005, np.nan])]) == ""
    assert "dtype" in _compare(_case(np.float32([1])), [np.float64([1])])
    assert "shape" in _compare(_case(np.float32([1, 2])), [np.float32([[1, 2]])])
    assert "output 0" in _compare(_case(np.float32([1])), [np.float32([1.1])])
    assert "outputs" in _compare(_case(np.float32([1])), [])
    assert _compare(_case(np.array(["a"], dtype=object)), [np.array(["a"], dtype=object)]) == ""


def test_report_counts_and_contract():
    results = (
        CaseResult(name="a", raw="pass", edgecore="pass"),
        CaseResult(name="b", raw="pass", edgecore="edgecore_error"),
        CaseResult(name="c", raw="error", edgecore="edgecore_error"),
        CaseResult(name="d", raw="error", edgecore="pass"),
        CaseResult(name="e", raw="error", edgecore="exception"),
        CaseResult(name="f", raw="pass", edgecore="mismatch"),
    )
    report = NodeTestReport(backend="x", results=results, skipped_not_tensors=2)
    counts = report.counts()
    assert counts["cases"] == 6 and counts["raw_passed"] == 3 and counts["edgecore_passed"] == 2
    assert counts["mismatches"] == 1 and counts["non_edgecore_exceptions"] == 1
    assert counts["raw_passed_edgecore_not"] == 2 and counts["edgecore_passed_raw_not"] == 1
    assert [r.name for r in report.violations()] == ["b", "e", "f"]
    assert report.to_json()["raw_failures"] == ["c", "d", "e"]


def test_runs_through_a_backend_and_the_raw_runtime(cases):
    pytest.importorskip("edgecore_reference", reason="edgecore-reference is not installed")
    pytest.importorskip("onnxruntime")
    chosen = [cases[n] for n in ("test_abs", "test_add_bcast", "test_relu", "test_sequence_insert_at_back")]
    report = run_node_tests("reference", cases=chosen)
    assert report.counts()["skipped_not_tensors"] == 1
    assert [(r.raw, r.edgecore) for r in report.results] == [("pass", "pass")] * 3

    def failing_raw(model, feeds):
        raise RuntimeError("the raw runtime cannot")

    report = run_node_tests("reference", cases=chosen[:1], raw=failing_raw)
    assert (report.results[0].raw, report.results[0].edgecore) == ("error", "pass")
    assert "cannot" in report.results[0].detail


def test_an_unknown_backend_is_an_edgecore_error(cases):
    report = run_node_tests("no_such_backend", cases=[cases["test_abs"]])
    assert report.results[0].edgecore == "edgecore_error" and report.results[0].breaks_contract
