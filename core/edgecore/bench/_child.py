"""The child process of the cold-start and memory measurements.

Runs in a fresh interpreter started by :mod:`edgecore.bench.child`, whose bootstrap takes the clock
before importing anything and calls :func:`main` with one JSON document:

``mode``    ``engine`` (import, load, compile through ``Engine``, first inference), ``raw`` (the same
            with the backend's raw-runtime baseline session instead of ``Engine``) or ``import``
            (import edgecore and the backend's runtime only: the memory baseline)
``source``  model path or ``zoo:NAME``; ``config`` EngineConfig fields; ``backend`` name (or auto)
``optimize``: OptimizationConfig fields for ``Engine.optimize`` (engine mode; null: none)
``batch``, ``seed``, ``sequence``: the inputs; ``steady``: queries run after the first, before the
            parent reads the peak memory; ``spawned``: the parent's ``time.time()`` at spawn

In ``raw`` mode the child releases the :class:`~edgecore.graph.Graph` it loaded the model with once
the raw session exists, so that its steady RSS is what the raw runtime itself keeps (its peak RSS
still includes the load).

It writes protocol lines to stdout, each prefixed with ``@@edgecore-bench``: ``first_result`` with
the stage timings, then ``ready``, then waits for a line on stdin (while it waits, the parent reads
its peak and current RSS from outside), and exits. Before ``ready`` it collects garbage and trims the
heap, so that the current RSS is what the process keeps. Anything else on stdout is ignored; logs go to
stderr.
"""

from __future__ import annotations

import gc
import json
import sys
import time

MARK = "@@edgecore-bench "


def _say(event: str, **data: object) -> None:
    sys.stdout.write(MARK + json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


def _release_free_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc ``malloc_trim``), so that the RSS
    read next is what the process keeps, not what the allocator has not returned yet."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the RSS then includes freed heap
        pass


def _config(fields: dict):
    from edgecore.config import EngineConfig

    return EngineConfig(**fields)


def main(spec: dict, started: tuple[float, float] | None = None) -> None:
    """Run one measurement. ``started``: ``(time.time(), time.perf_counter())`` when the interpreter
    reached the bootstrap, before any import."""
    wall, t = started or (time.time(), time.perf_counter())
    began = t
    stages = {"interpreter_ms": max(0.0, (wall - float(spec.get("spawned", wall))) * 1e3)}
    mode = spec["mode"]
    clock = time.perf_counter

    from edgecore.backend import backend_for
    from edgecore.plugins import get_plugin_manager

    pm = get_plugin_manager()
    config = _config(spec.get("config") or {})
    backend = spec.get("backend") or config.backend
    if backend != "auto":
        backend_for(pm.backends()[backend]).availability()  # imports the runtime the backend wraps
    stages["import_ms"] = (clock() - t) * 1e3
    if mode == "import":
        _say("first_result", stages=stages, backend=backend)
        _say("ready")
        sys.stdin.readline()
        return

    from edgecore.inputs import random_feeds
    from edgecore.selection import load_graph

    t = clock()
    graph = load_graph(spec["source"], pm)
    stages["load_ms"] = (clock() - t) * 1e3

    t = clock()
    if mode == "engine":
        from edgecore.engine import Engine

        engine = Engine(config, plugin_manager=pm).load(graph)
        run, backend = engine.run, engine.backend
        from edgecore import __version__ as version

        runtime = "edgecore"
    elif mode == "raw":
        from edgecore.bench.registry import get_baseline

        session = get_baseline(pm, backend).session(graph, config.compile_options())
        run, runtime, version = session.run, session.runtime, session.version
        inputs = graph.inputs
        del graph  # a raw runtime's user holds no edgecore Graph: release it before the RSS is read
        gc.collect()
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    stages["compile_ms"] = (clock() - t) * 1e3

    t = clock()
    if mode == "engine" and spec.get("optimize") is not None:
        from edgecore.optimize import OptimizationConfig

        engine.optimize(OptimizationConfig(**spec["optimize"]))
    stages["optimize_ms"] = (clock() - t) * 1e3 if spec.get("optimize") is not None and mode == "engine" else 0.0

    if mode == "engine":
        inputs = engine.inputs
    feeds = random_feeds(inputs, batch=int(spec.get("batch", 1)), seed=int(spec.get("seed", 0)),
                         sequence=int(spec.get("sequence", 128)))
    t = clock()
    run(feeds)
    stages["first_inference_ms"] = (clock() - t) * 1e3
    stages["in_process_ms"] = (clock() - began) * 1e3
    _say("first_result", stages=stages, backend=backend, runtime=runtime, version=version)

    for _ in range(int(spec.get("steady", 0))):
        run(feeds)
    _release_free_memory()
    _say("ready")
    sys.stdin.readline()

