"""ONNX's own backend node tests, run through an edgecore backend and through the raw runtime under it.

ONNX ships its operator conformance cases as code (``onnx.backend.test.case.node``: one model per
case, with inputs and expected outputs); :func:`node_cases` builds them at test time. For each case,
:func:`run_node_tests` runs

* the raw runtime (ONNX Runtime for ``cpu_simd``, OpenVINO for ``openvino``: see :data:`RAW_RUNNERS`),
  to learn which cases the runtime itself passes, and
* the same model through ``Engine(EngineConfig(backend=NAME))``,

and compares both with the expected outputs as ONNX's backend test runner does (same dtype;
``rtol``/``atol`` of the case). The contract it checks: every case the raw runtime passes passes
through edgecore, and a case edgecore cannot run fails with an :mod:`edgecore.errors` type, never
another exception. Cases whose inputs or outputs are not tensors (sequences, optionals) are out of
edgecore's scope (it takes and returns tensors) and counted apart.

``python -m edgecore.testing.node_tests --backend cpu_simd --backend openvino`` runs every case and
writes the counts to ``benchmarks/results/node_tests.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import attrs
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgecore.config import EngineConfig
from edgecore.engine import Engine
from edgecore.errors import EdgecoreError

__all__ = [
    "BackendNodeTests",
    "NodeCase",
    "CaseResult",
    "NodeTestReport",
    "RAW_RUNNERS",
    "node_cases",
    "select",
    "run_node_tests",
]

Outputs = Sequence[np.ndarray]
RawRunner = Callable[[onnx.ModelProto, Mapping[str, np.ndarray]], Outputs]

logger = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class NodeCase:
    """One of ONNX's node test cases: a model, its feeds and the outputs it must produce."""

    name: str
    model: onnx.ModelProto = attrs.field(eq=False, repr=False)
    feeds: Mapping[str, np.ndarray] = attrs.field(eq=False, repr=False)
    expected: tuple[np.ndarray, ...] = attrs.field(eq=False, repr=False)
    rtol: float
    atol: float
    tensors_only: bool  # False: some input or output is a sequence, optional or map


@attrs.frozen(kw_only=True)
class CaseResult:
    """What happened to one case: ``raw`` and ``edgecore`` are ``pass``, ``mismatch``, ``error``
    (edgecore: ``edgecore_error``, or ``exception`` for anything not from :mod:`edgecore.errors`)."""

    name: str
    raw: str
    edgecore: str
    detail: str = ""

    @property
    def breaks_contract(self) -> bool:
        """The raw runtime passes but edgecore does not, or edgecore raised a foreign exception."""
        return self.edgecore == "exception" or (self.raw == "pass" and self.edgecore != "pass")


@attrs.frozen(kw_only=True)
class NodeTestReport:
    backend: str
    results: tuple[CaseResult, ...]
    skipped_not_tensors: int = 0

    def counts(self) -> dict[str, int]:
        results = self.results
        return {
            "cases": len(results),
            "raw_passed": sum(r.raw == "pass" for r in results),
            "edgecore_passed": sum(r.edgecore == "pass" for r in results),
            "mismatches": sum(r.edgecore == "mismatch" for r in results),
            "edgecore_errors": sum(r.edgecore == "edgecore_error" for r in results),
            "non_edgecore_exceptions": sum(r.edgecore == "exception" for r in results),
            "raw_passed_edgecore_not": sum(r.raw == "pass" and r.edgecore != "pass" for r in results),
            "edgecore_passed_raw_not": sum(r.raw != "pass" and r.edgecore == "pass" for r in results),
            "skipped_not_tensors": self.skipped_not_tensors,
        }

    def violations(self) -> list[CaseResult]:
        return [r for r in self.results if r.breaks_contract]

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "counts": self.counts(),
            "violations": [attrs.asdict(r) for r in self.violations()],
            "raw_failures": sorted(r.name for r in self.results if r.raw != "pass"),
        }


# -- the cases -------------------------------------------------------------------------------------


def _array(value: Any) -> np.ndarray | None:
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, np.generic):
        return np.asarray(value)
    return None  # a sequence, an optional (None), a map


def _is_tensor(value: onnx.ValueInfoProto) -> bool:
    return value.type.HasField("tensor_type")


@functools.lru_cache(maxsize=1)
def node_cases() -> tuple[NodeCase, ...]:
    """Every node test case of the installed onnx package, in name order (built once per process)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        collected = collect_testcases()
    cases = []
    for case in collected:
        inputs, outputs = case.data_sets[0]
        graph = case.model.graph
        ins, outs = [_array(v) for v in inputs], [_array(v) for v in outputs]
        tensors_only = (
            all(a is not None for a in (*ins, *outs))
            and all(_is_tensor(v) for v in (*graph.input, *graph.output))
            and len(ins) == len(graph.input)
            and len(outs) == len(graph.output)
        )
        feeds = {v.name: a for v, a in zip(graph.input, ins)} if tensors_only else {}
        cases.append(
            NodeCase(
                name=case.name,
                model=case.model,
                feeds=feeds,
                expected=tuple(outs) if tensors_only else (),
                rtol=case.rtol,
                atol=case.atol,
                tensors_only=tensors_only,
            )
        )
    return tuple(sorted(cases, key=lambda c: c.name))


def select(cases: Sequence[NodeCase], count: int | None, seed: int = 0) -> list[NodeCase]:
    """``count`` cases drawn with ``seed`` (all of them for None), in name order."""
    if count is None or count >= len(cases):
        return list(cases)
    return sorted(random.Random(seed).sample(list(cases), count), key=lambda c: c.name)


def _compare(case: NodeCase, actual: Sequence[np.ndarray]) -> str:
    """"" when ``actual`` matches the expected outputs as ONNX's runner compares them, else why not."""
    if len(actual) != len(case.expected):
        return f"{len(actual)} outputs, expected {len(case.expected)}"
    for i, (got, want) in enumerate(zip(actual, case.expected)):
        got = np.asarray(got)
        if got.dtype != want.dtype and not (want.dtype.kind in "OUS" and got.dtype.kind in "OUS"):
            return f"output {i}: dtype {got.dtype}, expected {want.dtype}"
        if got.shape != want.shape:
            return f"output {i}: shape {list(got.shape)}, expected {list(want.shape)}"
        try:
            if want.dtype.kind in "OUSb" or want.dtype.kind in "iu":
                np.testing.assert_array_equal(got, want)
            else:
                np.testing.assert_allclose(
                    got.astype(np.float64) if got.dtype.itemsize < 2 or "float8" in got.dtype.name else got,
                    want.astype(np.float64) if want.dtype.itemsize < 2 or "float8" in want.dtype.name else want,
                    rtol=case.rtol,
                    atol=case.atol,
                    equal_nan=True,
                )
        except (AssertionError, TypeError, ValueError) as exc:
            return f"output {i}: " + " ".join(str(exc).split())[:300]
    return ""


# -- raw runtimes ----------------------------------------------------------------------------------


def run_onnxruntime(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> Outputs:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, dict(feeds))


def run_openvino(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> Outputs:
    import openvino

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        onnx.save(model, path)
        compiled = openvino.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        result = compiled([feeds[i.name] for i in model.graph.input])
        return [np.asarray(result[output]) for output in compiled.outputs]


#: backend name -> the raw runtime under it
RAW_RUNNERS: dict[str, RawRunner] = {"cpu_simd": run_onnxruntime, "openvino": run_openvino}


# -- running ---------------------------------------------------------------------------------------


def _one(case: NodeCase, backend: str, raw: RawRunner, config: Mapping[str, Any]) -> CaseResult:
    try:
        problem = _compare(case, raw(case.model, case.feeds))
        raw_outcome = "mismatch" if problem else "pass"
    except Exception as exc:  # the raw runtime's own failure: recorded, not judged
        raw_outcome, problem = "error", f"{type(exc).__name__}: {exc}"
    raw_detail = f"raw: {' '.join(problem.split())[:200]}" if problem else ""
    try:
        with Engine(EngineConfig(backend=backend, **config)).load(case.model) as engine:
            names = [o.name for o in engine.outputs]
            result = engine.run(dict(case.feeds))
        problem = _compare(case, [result[n] for n in names])
        outcome = "mismatch" if problem else "pass"
    except EdgecoreError as exc:
        outcome, problem = "edgecore_error", f"{type(exc).__name__}: {exc}"
    except Exception as exc:
        outcome, problem = "exception", f"{type(exc).__name__}: {exc}"
    detail = "; ".join(p for p in (f"edgecore: {' '.join(problem.split())[:300]}" if problem else "", raw_detail) if p)
    return CaseResult(name=case.name, raw=raw_outcome, edgecore=outcome, detail=detail)


def run_node_tests(
    backend: str,
    *,
    cases: Sequence[NodeCase] | None = None,
    raw: RawRunner | None = None,
    config: Mapping[str, Any] | None = None,
) -> NodeTestReport:
    """Run ``cases`` (default: all) through the raw runtime and through edgecore's ``backend``."""
    cases = node_cases() if cases is None else cases
    raw = raw or RAW_RUNNERS.get(backend, run_onnxruntime)
    config = dict(config or {})
    results = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case in cases:
            if case.tensors_only:
                results.append(_one(case, backend, raw, config))
    return NodeTestReport(
        backend=backend, results=tuple(results), skipped_not_tensors=sum(not c.tensors_only for c in cases)
    )


# -- pytest --------------------------------------------------------------------------------------


def _env_count(default: int | None) -> int | None:
    raw = os.environ.get("EDGECORE_NODE_TESTS", "").strip()
    if not raw:
        return default
    return None if raw == "all" else int(raw)


class BackendNodeTests:
    """ONNX's node tests for one backend, as a pytest class a plugin subclasses in its tests::

        class TestMyBackendNodeTests(BackendNodeTests):
            backend = "my_backend"
            known_gaps = {"test_einsum_scalar": "scalar outputs come back as zeros (issue 12)"}

    ``count`` cases drawn with ``seed`` run (None: all; ``EDGECORE_NODE_TESTS=all`` or a number
    overrides it).
    A ``known_gaps`` case (the raw runtime passes it, edgecore does not yet) is expected to fail;
    once it passes, the suite says so, as strict xfail does.
    """

    backend: str = ""
    config: Mapping[str, Any] = {}
    count: int | None = 400
    seed: int = 0
    known_gaps: Mapping[str, str] = {}

    @pytest.fixture(scope="class")
    @classmethod
    def report(cls) -> NodeTestReport:
        cases = select(node_cases(), _env_count(cls.count), cls.seed)
        return run_node_tests(cls.backend, cases=cases, config=cls.config)

    def test_raw_runtime_passes_pass_through_edgecore(self, report: NodeTestReport) -> None:
        broken = [r for r in report.violations() if r.edgecore != "exception" and r.name not in self.known_gaps]
        assert not broken, f"{len(broken)} cases the raw runtime passes fail through edgecore:\n" + "\n".join(
            f"{r.name}: {r.edgecore}: {r.detail[:400]}" for r in broken
        )

    def test_failures_are_edgecore_errors(self, report: NodeTestReport) -> None:
        foreign = [r for r in report.results if r.edgecore == "exception"]
        assert not foreign, "\n".join(f"{r.name}: {r.detail[:400]}" for r in foreign)

    def test_known_gaps_are_still_gaps(self, report: NodeTestReport) -> None:
        closed = [r.name for r in report.results if r.name in self.known_gaps and r.edgecore == "pass"]
        assert not closed, f"these known gaps of {self.backend} pass now; remove them from known_gaps: {closed}"

    def test_known_gaps_name_cases(self) -> None:
        names = {c.name for c in node_cases()}
        unknown = sorted(set(self.known_gaps) - names)
        assert not unknown, f"known_gaps names no node test case: {unknown}"

    def test_the_raw_runtime_ran_most_cases(self, report: NodeTestReport) -> None:
        counts = report.counts()
        assert counts["cases"] and counts["raw_passed"] >= counts["cases"] // 2, counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", help="edgecore backend (repeatable; default cpu_simd)")
    parser.add_argument("--count", type=int, default=None, help="a seeded subset of this many cases (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/node_tests.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)  # the counts; the engines stay quiet
    from edgecore.bench.machine import LoadMonitor, machine_info

    monitor = LoadMonitor().start(wait_s=120.0)  # counts are not timings, but the record says what ran
    cases = select(node_cases(), args.count, args.seed)
    document: dict[str, Any] = {"onnx": onnx.__version__, "seed": args.seed, "backends": {}}
    for backend in args.backend or ["cpu_simd"]:
        config = {"device": "cpu"} if backend == "openvino" else {}
        report = run_node_tests(backend, cases=cases, config=config)
        document["backends"][backend] = report.to_json()
        logger.info("%s %s", backend, json.dumps(report.counts()))
    document["machine"] = {**machine_info(), "load": monitor.stop()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
