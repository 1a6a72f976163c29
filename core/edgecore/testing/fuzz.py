"""The fuzzing harness: each hostile model loaded and run in a process of its own, watched from outside.

The contract under test: whatever file comes, ``Graph.load`` + ``Engine(...).load`` + ``run`` end in
an :class:`~edgecore.errors.EdgecoreError` or in a successful run; never a crash (a signal), a hang,
another exception, or memory far beyond the file's size.

How a case runs: a *zygote* process imports edgecore and the backend's runtime once; per case it
forks a child that caps its address space (``resource.setrlimit(RLIMIT_AS)``), loads and runs the
model (random feeds) and writes what happened to a file; the zygote waits for the child with
``os.wait4`` (exit status, signal, peak RSS) and kills it past the timeout. A crash takes down only
the child. The zygote creates no runtime session and no thread, so forking it is safe.

Concurrency: :func:`run_cases` drives one zygote per worker thread; each thread owns its zygote's
pipes, and results are gathered in a list the threads append to (list.append is atomic).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Iterable, Sequence

import attrs

from edgecore.testing.fuzz_cases import FuzzCase

__all__ = ["FuzzResult", "run_cases", "summarize", "memory_allowance", "OUTCOMES"]

#: What a case may end in; the first three are within the contract.
OUTCOMES = ("ok", "not_run", "edgecore_error", "other_exception", "crash", "hang", "memory")
_MAX_FEED_ELEMENTS = 1 << 22


@attrs.frozen(kw_only=True)
class FuzzResult:
    name: str
    mutation: str
    outcome: str
    error: str = ""
    message: str = ""
    file_bytes: int = 0
    peak_rss_growth: int = 0  # bytes the child's resident set grew by, load and run included
    seconds: float = 0.0

    @property
    def within_contract(self) -> bool:
        return self.outcome in ("ok", "not_run", "edgecore_error")


def memory_allowance(file_bytes: int) -> int:
    """How far a case's resident set may grow: a runtime session's own overhead (256 MiB) or 100
    times the model's size, whichever is larger. Beyond it, the case counts as ``memory``."""
    return max(256 << 20, 100 * file_bytes)


# -- the child: load and run one model -------------------------------------------------------------


def _feeds(specs: Sequence[Any], seed: int) -> dict[str, Any] | None:
    """Random feeds for ``specs`` (symbolic dims 2, unknown rank 1-D), None if too large to make.
    A case whose model rejects them still ends in an edgecore error, which the contract allows."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = (3,) if spec.shape is None else tuple(d if isinstance(d, int) else 2 for d in spec.shape)
        if np.prod(shape, dtype=float) > _MAX_FEED_ELEMENTS:
            return None
        dtype = spec.dtype.numpy
        if dtype.kind == "O":
            feeds[spec.name] = np.full(shape, "edgecore", dtype=object)
        elif dtype.kind == "b":
            feeds[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        elif dtype.kind in "iu":  # token types and masks as a tokenizer makes them, else small ids
            name = spec.name.lower()
            low, high = (0, 1) if "type" in name or "segment" in name else (1, 2) if "mask" in name else (0, 4)
            feeds[spec.name] = rng.integers(low, high, size=shape).astype(dtype)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _child(folder: Path, backend: str, limit: int, seed: int) -> None:
    """Runs in the forked child; never returns."""
    code = 0
    report: dict[str, Any] = {}
    try:
        import psutil

        baseline = psutil.Process().memory_info()
        report["baseline_rss"] = baseline.rss
        resource.setrlimit(resource.RLIMIT_AS, (baseline.vms + limit, baseline.vms + limit))
        from edgecore import EdgecoreError, Engine, EngineConfig, Graph

        try:
            graph = Graph.load(folder / "model.onnx")
            with Engine(EngineConfig(backend=backend, num_threads=1)).load(graph) as engine:
                feeds = _feeds(engine.inputs, seed)
                if feeds is None:
                    report["outcome"] = "not_run"
                else:
                    engine.run(feeds)
                    report["outcome"] = "ok"
        except EdgecoreError as exc:
            report.update(outcome="edgecore_error", error=type(exc).__name__, message=str(exc)[:500])
        except BaseException as exc:  # noqa: BLE001 - what the harness exists to find
            report.update(outcome="other_exception", error=type(exc).__name__,
                          message="".join(traceback.format_exception(exc))[-2000:])
        (folder / "result.json").write_text(json.dumps(report))
    except BaseException:  # noqa: BLE001 - even the report failed (memory): the status says so
        code = 3
    finally:
        os._exit(code)


# -- the zygote: forks one child per request, watches it -------------------------------------------


def _zygote(backend: str) -> None:
    """Reads ``{"folder", "timeout", "limit", "seed"}`` lines on stdin, answers one JSON line each."""
    import edgecore.engine  # noqa: F401 - imported once, shared by every forked child
    import edgecore.graph  # noqa: F401
    from edgecore.plugins import get_plugin_manager

    get_plugin_manager().backends()
    if backend == "cpu_simd":
        import onnxruntime  # noqa: F401
    out = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        folder = Path(request["folder"])
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(folder, backend, request["limit"], request["seed"])
        deadline = started + request["timeout"]
        status = rusage = None
        while True:
            done, status, rusage = os.wait4(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                _, status, rusage = os.wait4(pid, 0)
                status = "hang"
                break
            time.sleep(0.005)
        answer: dict[str, Any] = {"seconds": time.monotonic() - started, "maxrss": rusage.ru_maxrss * 1024}
        if status == "hang":
            answer["outcome"] = "hang"
        elif os.WIFSIGNALED(status):
            answer.update(outcome="crash", error=signal.Signals(os.WTERMSIG(status)).name)
        elif os.WEXITSTATUS(status) != 0:
            answer.update(outcome="memory", error=f"exit status {os.WEXITSTATUS(status)}")
        out.write(json.dumps(answer) + "\n")
        out.flush()


class _Zygote:
    def __init__(self, backend: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"from edgecore.testing.fuzz import _zygote; _zygote({backend!r})"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the fuzzing zygote died")
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _run_one(zygote: _Zygote, case: FuzzCase, root: Path, *, timeout: float, limit: int, seed: int) -> FuzzResult:
    folder = Path(tempfile.mkdtemp(prefix="case-", dir=root))
    try:
        for name, data in case.files.items():
            (folder / name).write_bytes(data)
        answer = zygote.ask({"folder": str(folder), "timeout": timeout, "limit": limit, "seed": seed})
        report = json.loads((folder / "result.json").read_text()) if (folder / "result.json").exists() else {}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    outcome = answer.get("outcome") or report.get("outcome", "crash")
    growth = max(0, answer["maxrss"] - report.get("baseline_rss", answer["maxrss"]))
    if outcome in ("ok", "not_run", "edgecore_error") and growth > memory_allowance(case.size):
        outcome, answer["error"] = "memory", f"resident set grew by {growth:,} bytes for a {case.size:,}-byte file"
    return FuzzResult(
        name=case.name, mutation=case.mutation, outcome=outcome,
        error=answer.get("error") or report.get("error", ""), message=report.get("message", ""),
        file_bytes=case.size, peak_rss_growth=growth, seconds=round(answer["seconds"], 3),
    )


def run_cases(
    cases: Iterable[FuzzCase],
    *,
    backend: str = "cpu_simd",
    workers: int = 2,
    timeout: float = 30.0,
    memory_limit: int = 1 << 30,
) -> list[FuzzResult]:
    """Run every case in a forked child (``workers`` at a time); results in the cases' order.

    ``timeout``: seconds before a case counts as a hang. ``memory_limit``: bytes of address space a
    child may add to what it starts with; running out ends in MemoryError or an edgecore error, not
    in the machine swapping.
    """
    cases = list(cases)
    results: list[FuzzResult | None] = [None] * len(cases)
    next_index = iter(range(len(cases)))
    lock = threading.Lock()

    def worker(root: Path) -> None:
        zygote = _Zygote(backend)
        try:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                results[index] = _run_one(zygote, cases[index], root, timeout=timeout, limit=memory_limit, seed=index)
        finally:
            zygote.close()

    with tempfile.TemporaryDirectory(prefix="edgecore-fuzz-") as root:
        threads = [threading.Thread(target=worker, args=(Path(root),)) for _ in range(max(1, workers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return [r for r in results if r is not None]


def summarize(results: Sequence[FuzzResult]) -> dict[str, Any]:
    """Counts per outcome, per mutation, and peak RSS growth against file size."""
    counts = {outcome: sum(r.outcome == outcome for r in results) for outcome in OUTCOMES}
    by_mutation: dict[str, dict[str, int]] = {}
    for r in results:
        by_mutation.setdefault(r.mutation, {}).setdefault(r.outcome, 0)
        by_mutation[r.mutation][r.outcome] += 1
    worst = max(results, key=lambda r: r.peak_rss_growth, default=None)
    return {
        "cases": len(results),
        "counts": counts,
        "within_contract": sum(r.within_contract for r in results),
        "by_mutation": by_mutation,
        "peak_rss_growth_max_bytes": worst.peak_rss_growth if worst else 0,
        "peak_rss_growth_max_case": worst.name if worst else "",
        "peak_rss_growth_max_file_bytes": worst.file_bytes if worst else 0,
        "largest_file_bytes": max((r.file_bytes for r in results), default=0),
        "failures": [attrs.asdict(r) for r in results if not r.within_contract],
    }
