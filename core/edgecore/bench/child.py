"""Measure a fresh process from outside: time to first result, and peak memory (RSS).

:func:`run_child` starts a fresh interpreter running :mod:`edgecore.bench._child` and times it from just before the spawn
to the moment its first result is read back. After its steady-state queries, while the child waits,
the parent reads the child's peak RSS (Linux ``VmHWM`` in ``/proc/PID/status``; elsewhere the largest
RSS seen by polling with psutil every 5 ms) and current RSS, then lets it exit.

Memory figures are *growth over a baseline process* that only imports edgecore and the backend's
runtime (mode ``import``), so the interpreter and the runtime's own libraries are not counted.

Concurrency: one call owns its child. Two helper threads per call drain the child's stderr and,
where there is no ``/proc``, poll its RSS; both end with the child. A watchdog kills a child that
outlives ``timeout_s``.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Mapping

import attrs

from edgecore.selection import load_graph
from edgecore.errors import EdgecoreError

__all__ = ["ChildRun", "run_child", "child_source", "TIMEOUT_S"]

MARK = "@@edgecore-bench "
#: Takes the clock before anything is imported, so that importing edgecore counts as import time.
_BOOTSTRAP = (
    "import time; _t = (time.time(), time.perf_counter()); import sys, json; "
    "from edgecore.bench._child import main; main(json.loads(sys.argv[1]), _t)"
)
TIMEOUT_S = 600.0
MB = 1024 * 1024


@attrs.frozen(kw_only=True)
class ChildRun:
    """One fresh process: ``total_ms`` from spawn to first result (seen by the parent), the child's
    own ``stages`` (ms), the backend it used, and its ``peak_rss_mb``/``rss_mb`` read from outside."""

    mode: str
    total_ms: float
    stages: Mapping[str, float]
    backend: str
    peak_rss_mb: float
    rss_mb: float
    memory_method: str
    runtime: str = ""
    version: str = ""


def _proc_status(pid: int) -> dict[str, float] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = float(value.split()[0]) * 1024 / MB  # kB
    return found if len(found) == 2 else None


class _Poller(threading.Thread):
    """Largest RSS of a process, polled (for systems without /proc)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name=f"rss-poll-{pid}")
        self.pid = pid
        self.peak = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            process = psutil.Process(self.pid)
            while not self.stop.is_set():
                self.peak = max(self.peak, process.memory_info().rss / MB)
                self.stop.wait(0.005)
        except psutil.Error:
            return


def _drain(stream: Any, into: collections.deque) -> None:
    for line in stream:
        into.append(line)


def child_source(source: Any, folder: Path) -> str:
    """``source`` as something a child can load: ``zoo:NAME`` or a path (other sources are written
    to an ONNX file in ``folder``)."""
    if isinstance(source, str) and source.startswith("zoo:"):
        return source
    if isinstance(source, (str, os.PathLike)):
        return str(Path(source).resolve())
    from edgecore.graph import Graph

    path = folder / "model.onnx"
    path.write_bytes(load_graph(source).to_bytes())
    return str(path)


def run_child(
    mode: str,
    *,
    source: str | None = None,
    config: Mapping[str, Any] | None = None,
    backend: str = "auto",
    batch: int = 1,
    seed: int = 0,
    sequence: int = 128,
    steady: int = 0,
    optimize: Mapping[str, Any] | None = None,
    timeout_s: float = TIMEOUT_S,
) -> ChildRun:
    """Run one fresh child process in ``mode`` (engine, raw or import) and measure it from outside."""
    spec = {
        "mode": mode,
        "source": source,
        "config": dict(config or {}),
        "backend": backend,
        "batch": batch,
        "seed": seed,
        "sequence": sequence,
        "steady": steady,
        "optimize": None if optimize is None else dict(optimize),
    }
    errors: collections.deque = collections.deque(maxlen=40)
    started = time.perf_counter()
    spec["spawned"] = time.time()
    process = subprocess.Popen(
        [sys.executable, "-c", _BOOTSTRAP, json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    watchdog = threading.Timer(timeout_s, process.kill)
    watchdog.start()
    drain = threading.Thread(target=_drain, args=(process.stderr, errors), daemon=True)
    drain.start()
    poller = None if _proc_status(process.pid) is not None else _Poller(process.pid)
    if poller is not None:
        poller.start()
    try:
        first, first_at = _expect(process, "first_result", drain, errors)
        total_ms = (first_at - started) * 1e3
        _expect(process, "ready", drain, errors)
        status = _proc_status(process.pid)
        if status is not None:
            peak, rss, method = status["VmHWM"], status["VmRSS"], "VmHWM from /proc/PID/status"
        else:
            import psutil

            rss = psutil.Process(process.pid).memory_info().rss / MB
            peak, method = max(poller.peak if poller else 0.0, rss), "largest RSS polled every 5 ms (psutil)"
        process.stdin.write("\n")
        process.stdin.flush()
        process.wait(timeout=timeout_s)
    finally:
        watchdog.cancel()
        if poller is not None:
            poller.stop.set()
        if process.poll() is None:
            process.kill()
            process.wait()
    return ChildRun(
        mode=mode,
        total_ms=total_ms,
        stages=first.get("stages", {}),
        backend=first.get("backend") or backend,
        peak_rss_mb=peak,
        rss_mb=rss,
        memory_method=method,
        runtime=first.get("runtime", ""),
        version=first.get("version", ""),
    )


def _expect(
    process: subprocess.Popen, event: str, drain: threading.Thread, errors: collections.deque
) -> tuple[dict, float]:
    for line in process.stdout:
        if not line.startswith(MARK):
            continue
        message = json.loads(line[len(MARK) :])
        if message.get("event") == event:
            return message, time.perf_counter()
    process.wait()
    drain.join(timeout=2.0)
    tail = "".join(errors).strip()[-2000:]
    raise EdgecoreError(
        f"benchmark child process (exit code {process.returncode}) ended before '{event}'"
        + (f": {tail}" if tail else "")
    )
