"""Memory and start-up in phases, per model and backend, each measured in a fresh process (issue 12).

For each model (zoo MobileNet-v2 int8, ResNet-50 int8, BERT-base int8 and fp32, seq 128) and each
available backend (cpu_simd, openvino) the script starts fresh interpreters of itself:

* **first start** (an empty cache folder: ``EDGECORE_CACHE_DIR`` and ``EDGECORE_OPENVINO_CACHE_DIR``
  point into a new folder) and **second start** (the same folder, now holding the compiled
  artifacts), alternated ``--repeats`` times. Each reads its memory from ``/proc/self/smaps_rollup``
  -- PSS, its anonymous (private heap) and file-backed (mapped weights) parts apart, and private
  bytes -- at process start, after importing edgecore and the runtime, after ``Graph.load``, after
  compiling (``Engine.load`` of that graph), after the first run and after 5 warm-up runs (steady
  state); the peak during load + compile is sampled every 10 ms (PSS) and read from the kernel as
  peak RSS (``VmHWM``, reset before loading). Growth figures are over the import phase.
* in the second start, after its phases: the latency of the cached engine against the
  **pre-cache configuration** (``PRECACHE``: the backend's own cache turned off; cpu_simd's
  ``artifact_cache=False`` is how it compiled before issue 12) in the same process, interleaved
  (``_common.interleaved``), as a ratio.
* **cold start**: process start (the parent's clock just before spawning) to the first output of
  ``Engine(...).load(path).run(...)`` of ``--cold-model`` (default MobileNet-v2 int8): the pre-cache
  configuration from an empty cache folder (every start reads and checks the model and lets the
  runtime optimize it, as before issue 12), the first start (empty cache: builds the artifacts) and
  the cached start, alternated; and whether the cached start imported onnx / onnx_ir.

* with ``--baseline-tree DIR`` (edgecore's ``core/`` and ``plugins/`` before issue 12, put ahead of
  the installed packages on ``PYTHONPATH``): the same phases and cold start of that code, **before**,
  in the same run, so that kept memory, load time and cold start are compared with it as ratios.

The model files are prepared once under ``--work`` (zoo export; int8 = ``Engine.optimize`` with the
``int8`` preset on that backend, written with its weights inline, as ``model_comparison.py`` does),
outside every measured process. Ratios are taken inside one run; the machine's load is recorded
(``_common``) and a busy run says ``quiet: false``.

    python benchmarks/memory_phases.py [--models mobilenet_v2:int8,...] [--backends cpu_simd,openvino]
                                       [--repeats 3] [--work DIR] [--out FILE] [--baseline-tree DIR]

Writes benchmarks/results/memory_phases.json (``--out`` elsewhere for a smoke run).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("mobilenet_v2:int8", "resnet50:int8", "bert_base:int8", "bert_base:fp32")
BACKENDS = ("cpu_simd", "openvino")
#: custom_options that turn each backend's own compiled-artifact cache off: the pre-cache configuration
PRECACHE = {"cpu_simd": {"artifact_cache": False}, "openvino": {"cache_dir": False}}
RUNTIME_MODULE = {"cpu_simd": "onnxruntime", "openvino": "openvino"}
SEQUENCE = 128
WARMUP = 5
MB = 1 << 20


# -- in the child ----------------------------------------------------------------------------------


def smaps() -> dict[str, float]:
    """This process's memory in MB from ``/proc/self/smaps_rollup``: ``pss``, ``pss_anon`` (heap and
    other private anonymous memory), ``pss_file`` (mapped files: code, weights), ``private`` (clean +
    dirty), ``rss``; and ``peak_rss`` (``VmHWM``)."""
    values: dict[str, float] = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        values[name.strip()] = int(rest.split()[0]) / 1024  # kB
    peak = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return {
        "pss": values.get("Pss", 0.0),
        "pss_anon": values.get("Pss_Anon", 0.0),
        "pss_file": values.get("Pss_File", 0.0),
        "private": values.get("Private_Clean", 0.0) + values.get("Private_Dirty", 0.0),
        "rss": values.get("Rss", 0.0),
        "peak_rss": peak,
    }


class PeakSampler:
    """The highest PSS (and its anonymous part) seen every ``interval_s`` while running."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.peak = {"pss": 0.0, "pss_anon": 0.0, "private": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            now = smaps()
            for key in self.peak:
                self.peak[key] = max(self.peak[key], now[key])
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _config(job: dict, precache: bool = False) -> Any:
    from edgecore import EngineConfig

    if job.get("before"):  # the code before issue 12 (--baseline-tree): its own defaults, no cache settings
        return EngineConfig(backend=job["backend"])

    custom = dict(job.get("custom_options", {}))
    if precache:
        custom.update(PRECACHE.get(job["backend"], {}))
    return EngineConfig(
        backend=job["backend"], memory_mode=job.get("memory_mode", "balanced"), cache_dir=job["cache_dir"], custom_options=custom,
    )


def child_phases(job: dict) -> dict:
    """One fresh process: memory after each phase, peak during load, and (``latency``) the cached
    engine's latency against the pre-cache configuration."""
    phases = {"start": smaps()}
    started = time.perf_counter()
    import numpy as np  # noqa: F401  (part of any use of edgecore)

    import edgecore

    __import__(RUNTIME_MODULE[job["backend"]])
    times = {"import_s": time.perf_counter() - started}
    phases["import"] = smaps()

    peak_reset = _reset_peak_rss()
    with PeakSampler() as sampler:
        started = time.perf_counter()
        from edgecore.graph import Graph

        graph = Graph.load(job["model"]) if job.get("before") else Graph.load(job["model"], cache_dir=job["cache_dir"])
        times["load_s"] = time.perf_counter() - started
        phases["load"] = smaps()
        started = time.perf_counter()
        engine = edgecore.Engine(_config(job)).load(graph)
        times["compile_s"] = time.perf_counter() - started
        phases["compile"] = smaps()
    peak = {**sampler.peak, "peak_rss": smaps()["peak_rss"] if peak_reset else None}

    from edgecore.inputs import random_feeds

    feeds = random_feeds(engine.inputs, batch=1, sequence=SEQUENCE, seed=0)
    started = time.perf_counter()
    engine.run(feeds)
    times["first_run_s"] = time.perf_counter() - started
    phases["first_run"] = smaps()
    for _ in range(WARMUP):
        engine.run(feeds)
    phases["steady"] = smaps()
    base = phases["import"]
    result = {
        "phases_mb": phases,
        "growth_mb": {
            name: {k: round(v[k] - base[k], 1) for k in ("pss", "pss_anon", "pss_file", "private")}
            for name, v in phases.items() if name not in ("start", "import")
        },
        "peak_growth_mb": {k: (round(v - base[k], 1) if v is not None else None) for k, v in peak.items()},
        "times_s": times,
        "compiled_from": getattr(engine.compiled, "model_source", None),
        "imported": {m: m in sys.modules for m in ("onnx", "onnx_ir")},
    }
    if job.get("latency") and not job.get("before"):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _common import interleaved

        try:  # e.g. a backend whose option for turning its cache off changed (PRECACHE)
            precache = edgecore.Engine(_config(job, precache=True)).load(job["model"])
        except Exception as exc:
            result["latency"] = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            calls = job.get("calls", 20)
            result["latency"] = interleaved(
                {"precache": lambda: precache.run(feeds), "cached": lambda: engine.run(feeds)},
                blocks=job.get("blocks", 6), calls=calls, drop=max(1, calls // 10),
            )
            precache.close()
    engine.close()
    return result


def child_cold(job: dict) -> dict:
    """Process start to first output, the way an application starts."""
    from edgecore import Engine
    from edgecore.inputs import random_feeds

    engine = Engine(_config(job, precache=job.get("precache", False))).load(job["model"])
    engine.run(random_feeds(engine.inputs, batch=1, sequence=SEQUENCE, seed=0))
    first_output = time.time()
    imported = {m: m in sys.modules for m in ("onnx", "onnx_ir", "onnxruntime", "openvino")}
    return {"first_output_unix": first_output, "imported": imported}


# -- in the parent ---------------------------------------------------------------------------------


def _spawn(job: dict, env: dict) -> tuple[dict, float]:
    """Run ``job`` in a fresh interpreter; its JSON result and the parent's clock before spawning."""
    spawned = time.time()
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True, env=env, timeout=3600
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {job['kind']} for {job['model']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), spawned


def _env(cache: Path, before: Path | None = None) -> dict:
    """The child's environment: caches in ``cache``; with ``before``, the edgecore packages of that
    source tree ahead of the installed ones."""
    env = dict(os.environ)
    env["EDGECORE_CACHE_DIR"] = str(cache)
    env["EDGECORE_OPENVINO_CACHE_DIR"] = str(cache / "openvino")
    if before is not None:
        trees = [before / "core", *(before / "plugins" / name for name in ("cpu_simd", "openvino_npu"))]
        env["PYTHONPATH"] = os.pathsep.join([*map(str, trees), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _clear(cache: Path) -> None:
    for path in cache.iterdir():
        subprocess.run(["rm", "-rf", str(path)], check=True)


def prepare(name: str, precision: str, backend: str, work: Path) -> Path:
    """The model file as deployed: the zoo model (fp32) or its int8 optimization on ``backend``."""
    path = work / (f"{name}.onnx" if precision == "fp32" else f"{name}-{backend}-{precision}.onnx")
    if path.is_file():
        return path
    from edgecore import Engine, EngineConfig, zoo
    from edgecore.bench.settings import OPTIMIZE_PRESETS
    from edgecore.optimize import OptimizationConfig

    work.mkdir(parents=True, exist_ok=True)
    if precision == "fp32":
        return zoo.export(name, path)
    with tempfile.TemporaryDirectory() as cache, Engine(EngineConfig(backend=backend, cache_dir=cache)) as engine:
        engine.load(f"zoo:{name}")
        engine.optimize(OptimizationConfig(sequence_length=SEQUENCE, **OPTIMIZE_PRESETS[precision]))
        staging = path.with_suffix(".tmp")
        staging.write_bytes(engine.graph.to_bytes())
        os.replace(staging, path)
    return path


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(float(statistics.median(kept)), 3) if kept else None


def _summary(runs: list[dict]) -> dict:
    """Medians over repeats of every growth figure and time."""
    first = runs[0]
    return {
        "growth_mb": {
            phase: {k: _median([r["growth_mb"][phase][k] for r in runs]) for k in first["growth_mb"][phase]}
            for phase in first["growth_mb"]
        },
        "peak_growth_mb": {k: _median([r["peak_growth_mb"][k] for r in runs]) for k in first["peak_growth_mb"]},
        "times_s": {k: _median([r["times_s"][k] for r in runs]) for k in first["times_s"]},
        "import_pss_mb": _median([r["phases_mb"]["import"]["pss"] for r in runs]),
        "compiled_from": first["compiled_from"],
    }


def measure(model: Path, backend: str, args: argparse.Namespace, memory_mode: str) -> dict:
    cache = Path(tempfile.mkdtemp(prefix="memory-phases-", dir=args.work))
    job = {"backend": backend, "model": str(model), "cache_dir": str(cache), "memory_mode": memory_mode}
    firsts, seconds, befores = [], [], []
    try:
        for repeat in range(args.repeats):
            if args.baseline_tree is not None:
                _clear(cache)
                before, _ = _spawn({**job, "kind": "phases", "before": True}, _env(cache, args.baseline_tree))
                befores.append(before)
            _clear(cache)  # an empty cache for every first start
            first, _ = _spawn({**job, "kind": "phases"}, _env(cache))
            second, _ = _spawn({**job, "kind": "phases", "latency": repeat == 0, "calls": args.calls}, _env(cache))
            firsts.append(first)
            seconds.append(second)
    finally:
        subprocess.run(["rm", "-rf", str(cache)], check=True)
    load = lambda r: r["times_s"]["load_s"] + r["times_s"]["compile_s"]  # noqa: E731
    before = {}
    if befores:
        before = {
            "before": _summary(befores),
            "second_over_before_load_time": _median([load(s) / load(b) for b, s in zip(befores, seconds)]),
        }
    return {
        **before,
        "first_start": _summary(firsts),
        "second_start": _summary(seconds),
        "second_over_first_load_time": _median([load(s) / load(f) for f, s in zip(firsts, seconds)]),
        "latency": seconds[0].get("latency"),
        "runs": {"before": befores, "first_start": firsts, "second_start": seconds},
    }


def cold_start(model: Path, backend: str, args: argparse.Namespace) -> dict:
    cache = Path(tempfile.mkdtemp(prefix="memory-cold-", dir=args.work))
    job = {"kind": "cold", "backend": backend, "model": str(model), "cache_dir": str(cache)}
    before, precache, first, cached, imported = [], [], [], [], {}
    try:
        for _ in range(args.repeats):
            if args.baseline_tree is not None:
                _clear(cache)
                result, spawned = _spawn({**job, "before": True}, _env(cache, args.baseline_tree))
                before.append(result["first_output_unix"] - spawned)
            _clear(cache)
            result, spawned = _spawn({**job, "precache": True}, _env(cache))
            precache.append(result["first_output_unix"] - spawned)
            _clear(cache)
            result, spawned = _spawn(job, _env(cache))
            first.append(result["first_output_unix"] - spawned)
            result, spawned = _spawn(job, _env(cache))
            cached.append(result["first_output_unix"] - spawned)
            imported = result["imported"]
    finally:
        subprocess.run(["rm", "-rf", str(cache)], check=True)
    return {
        "model": model.name,
        "backend": backend,
        "before_start_s": _median(before),
        "cached_over_before": _median([c / b for b, c in zip(before, cached)]) if before else None,
        "precache_start_s": _median(precache),
        "first_start_s": _median(first),
        "cached_start_s": _median(cached),
        "cached_over_precache": _median([c / p for p, c in zip(precache, cached)]),
        "cached_over_first": _median([c / f for f, c in zip(first, cached)]),
        "cached_start_imported": imported,
        "runs_s": {"before_start": before, "precache_start": precache, "first_start": first, "cached_start": cached},
    }


def _available(backends: list[str]) -> dict[str, str]:
    from edgecore.backend import backend_for
    from edgecore.plugins import get_plugin_manager

    specs = get_plugin_manager().backends()
    found = {}
    for name in backends:
        if name not in specs:
            found[name] = "not installed"
            continue
        availability = backend_for(specs[name]).availability()
        found[name] = "" if availability.ok else availability.reason
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--models", default=",".join(MODELS), help="zoo name:precision (fp32 or int8), comma-separated")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--memory-modes", default="balanced", help="balanced,min: cpu_simd's min is measured too")
    parser.add_argument("--repeats", type=int, default=3, help="fresh-process pairs (first, second start) per row")
    parser.add_argument("--calls", type=int, default=20, help="calls per interleaved latency block")
    parser.add_argument("--cold-model", default="mobilenet_v2:int8", help="model of the cold-start figure ('' = none)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "edgecore-memory-phases",
                        help="folder for the prepared model files (kept: reused by the next run)")
    parser.add_argument("--out", type=Path, default=RESULTS / "memory_phases.json")
    parser.add_argument("--prepare-only", action="store_true", help="only write the model files into --work")
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="a source tree of edgecore before issue 12 (core/, plugins/): its start and memory "
                             "measured in the same run, e.g. from: git archive f3861a9 core plugins | tar -x -C DIR")
    args = parser.parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        result = child_phases(job) if job["kind"] == "phases" else child_cold(job)
        print(json.dumps(result))
        return 0

    args.work.mkdir(parents=True, exist_ok=True)
    backends = [b for b in args.backends.split(",") if b]
    availability = _available(backends)
    for name, reason in availability.items():
        if reason:
            print(f"skipping {name}: {reason}", file=sys.stderr)
    backends = [b for b in backends if not availability[b]]
    if args.prepare_only:
        for entry in (m for m in args.models.split(",") if m):
            name, _, precision = entry.partition(":")
            for backend in backends:
                started = time.perf_counter()
                path = prepare(name, precision or "fp32", backend, args.work)
                print(f"{path} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import load_monitor, machine

    modes = [m for m in args.memory_modes.split(",") if m]
    rows = []
    for entry in (m for m in args.models.split(",") if m):
        name, _, precision = entry.partition(":")
        for backend in backends:
            for mode in modes if backend == "cpu_simd" else ["balanced"]:
                load_monitor().sample()
                print(f"{name} {precision} on {backend} ({mode}) ...", file=sys.stderr, flush=True)
                row = {"model": name, "precision": precision or "fp32", "backend": backend, "memory_mode": mode}
                try:  # a row that fails is recorded with its error; the others are still measured
                    model = prepare(name, precision or "fp32", backend, args.work)
                    row["file_mb"] = round(model.stat().st_size / MB, 1)
                    row.update(measure(model, backend, args, mode))
                except Exception as exc:
                    print(f"  failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                    row["error"] = f"{type(exc).__name__}: {exc}"
                rows.append(row)
    cold = []
    if args.cold_model:
        name, _, precision = args.cold_model.partition(":")
        for backend in backends:
            try:
                cold.append(cold_start(prepare(name, precision or "fp32", backend, args.work), backend, args))
            except Exception as exc:
                cold.append({"model": name, "backend": backend, "error": f"{type(exc).__name__}: {exc}"})
    report = {
        "benchmark": "memory_phases",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "method": __doc__,
        "settings": {"sequence": SEQUENCE, "warmup_runs": WARMUP, "repeats": args.repeats, "batch": 1,
                     "precache_options": PRECACHE, "baseline_tree": str(args.baseline_tree or "")},
        "rows": rows,
        "cold_start": cold,
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    _print(rows, cold)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _print(rows: list[dict], cold: list[dict]) -> None:
    head = ("model", "backend", "mode", "start", "steady PSS", "anon", "file", "peak", "load s", "2nd/1st", "lat ratio")
    print(" | ".join(head))
    for row in rows:
        if "error" in row:
            print(f"{row['model']} {row['precision']} | {row['backend']} | {row['memory_mode']} | failed: {row['error']}")
            continue
        for start in ("before", "first_start", "second_start"):
            if start not in row:
                continue
            s = row[start]
            steady, peak = s["growth_mb"]["steady"], s["peak_growth_mb"]
            latency = (row["latency"].get("ratio", {}).get("cached") or row["latency"].get("error")
                       if start == "second_start" and row["latency"] else None)
            print(" | ".join(str(v) for v in (
                f"{row['model']} {row['precision']}", row["backend"], row["memory_mode"], start,
                steady["pss"], steady["pss_anon"], steady["pss_file"], peak["pss"],
                round(s["times_s"]["load_s"] + s["times_s"]["compile_s"], 3),
                row["second_over_first_load_time"] if start == "second_start" else "", latency or "",
            )))
    for c in cold:
        if "error" in c:
            print(f"cold start {c['model']} on {c['backend']}: failed: {c['error']}")
            continue
        print(f"cold start {c['model']} on {c['backend']}: before issue 12 {c['before_start_s']} s "
              f"(cached / before {c['cached_over_before']}), pre-cache configuration {c['precache_start_s']} s, first "
              f"{c['first_start_s']} s, cached {c['cached_start_s']} s (cached / pre-cache {c['cached_over_precache']}, "
              f"cached / first {c['cached_over_first']}); cached start imported {c['cached_start_imported']}")


if __name__ == "__main__":
    sys.exit(main())
