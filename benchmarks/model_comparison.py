"""The seed's "Model Performance Comparison" table, measured on this machine.

For each zoo model (MobileNet-v2, ResNet-50, EfficientNet-B0, BERT-base at sequence 128) and each
available backend/precision variant: single-stream latency (p50, p99) and throughput at batch 1,
offline throughput at batch 8, and the model's memory, measured from outside as the peak RSS growth
of a fresh process over one that only imports edgecore and the runtime, beside the seed's targets.
Cold start comes along from the same fresh processes.

Method: every figure comes from edgecore's harness (docs/benchmarks.md). A variant with an
optimization preset (int8) is optimized once here, and the optimized model file is what is measured,
as it would be deployed; its cold start therefore excludes the optimization itself. All in-process
figures of one run share this process; the figures of different rows are still taken minutes apart
on a shared machine, so compare rows with care and quote ratios from ``edgecore bench --baseline``.

    python benchmarks/model_comparison.py [--models mobilenet_v2,resnet50] [--variants cpu_simd,cpu_simd:int8]
                                          [--duration 2] [--baseline]

Writes benchmarks/results/model_comparison.json and model_comparison.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

#: (zoo name, label, targets: latency ms <, throughput FPS >, memory MB <); None: no target in the seed.
MODELS = (
    ("mobilenet_v2", "MobileNet-v2", (10.0, 100.0, 50.0)),
    ("resnet50", "ResNet-50", (30.0, 30.0, 100.0)),
    ("efficientnet_b0", "EfficientNet-B0", None),
    ("bert_base", "BERT-base (seq 128)", (50.0, 20.0, 200.0)),
)
#: backend[:preset] variants tried when available, in table order; preset is an edgecore.bench optimize preset.
VARIANTS = ("cpu_simd", "cpu_simd:int8", "openvino")
PRECISION = {None: "fp32", "int8": "int8", "fp16": "fp16"}


def _available_backends() -> dict[str, str]:
    """Backend name -> '' when available, else the reason."""
    from edgecore.backend import backend_for
    from edgecore.plugins import get_plugin_manager

    found = {}
    for name, spec in get_plugin_manager().backends().items():
        try:
            availability = backend_for(spec).availability()
            found[name] = "" if availability.ok else availability.reason
        except Exception as exc:  # a broken backend is reported, not fatal
            found[name] = repr(exc)
    return found


def _artifact(model: str, backend: str, preset: str | None, folder: Path) -> tuple[str, dict | None]:
    """The model as it would be deployed: the zoo model itself, or its optimized file."""
    if preset is None:
        return f"zoo:{model}", None
    from edgecore import Engine, EngineConfig
    from edgecore.bench.settings import OPTIMIZE_PRESETS
    from edgecore.optimize import OptimizationConfig

    with Engine(EngineConfig(backend=backend)) as engine:
        engine.load(f"zoo:{model}")
        report = engine.optimize(OptimizationConfig(sequence_length=128, **OPTIMIZE_PRESETS[preset]))
        path = folder / f"{model}-{backend}-{preset}.onnx"
        path.write_bytes(engine.graph.to_bytes())
    return str(path), report.to_json()


def _row(model: str, label: str, targets: Any, backend: str, preset: str | None, report: Any, optimization: Any) -> dict:
    single, offline, cold = (report.result(name) for name in ("single-stream", "offline", "cold-start"))
    memory = cold.metrics["memory"]["peak_growth_mb"]
    latency, fps = single.latency.p50, single.queries_per_s
    row = {
        "model": model,
        "label": label,
        "backend": backend,
        "precision": PRECISION.get(preset, preset),
        "optimize": preset,
        "latency_p50_ms": latency,
        "latency_p99_ms": single.latency.p99,
        "fps_batch1": fps,
        "fps_batch8": offline.samples_per_s,
        "memory_mb": memory,
        "memory_steady_mb": cold.metrics["memory"]["steady_growth_mb"],
        "cold_start_ms": cold.metrics["cold_start_ms"],
        "stages_ms": cold.metrics["stages_ms"],
        "raw_p50_ratio": single.baseline.ratio["p50"] if single.baseline else None,
        "raw_runtime": f"{single.baseline.runtime} {single.baseline.version}" if single.baseline else None,
        "targets": None,
        "meets": None,
        "optimization": None,
    }
    if targets is not None:
        lat_t, fps_t, mem_t = targets
        row["targets"] = {"latency_ms_below": lat_t, "fps_above": fps_t, "memory_mb_below": mem_t}
        row["meets"] = {"latency": latency < lat_t, "fps": fps > fps_t, "memory": memory < mem_t}
    if optimization is not None:
        row["optimization"] = {
            "kept": [p["name"] for p in optimization.get("passes", []) if p.get("status") == "kept"],
            "size_reduction": optimization.get("size_reduction"),
            "final_loss": optimization.get("final_loss"),
            "metric": optimization.get("metric"),
        }
    return row


def _markdown(document: dict) -> str:
    machine = document["machine"]
    lines = [
        "# Model performance comparison",
        "",
        f"Measured {document['created']} on {machine['cpu']} ({machine['usable_cores']} cores, load average at start "
        f"{machine['load_average']}), {machine['os']}; edgecore {machine['edgecore']}; "
        + ", ".join(f"{k} {v}" for k, v in machine["runtimes"].items() if k in ("onnxruntime", "openvino")),
        "",
        "Latency: single-stream p50 at batch 1. Throughput: single-stream queries/s at batch 1 (batch 8: offline). "
        "Memory: peak RSS growth of a fresh process over one that only imports edgecore and the runtime; "
        "kept: its RSS growth after warm-up, garbage collection and a heap trim. "
        "Targets from the seed; a check mark meets it.",
        "",
        "| Model | Backend | Precision | Latency (ms) | Throughput (FPS) | Memory (MB) | Kept (MB) | FPS at batch 8 "
        "| Cold start (ms) | Target (ms / FPS / MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def mark(row: dict, key: str) -> str:
        return "" if row["meets"] is None else (" ✓" if row["meets"][key] else " ✗")

    for row in document["rows"]:
        t = row["targets"]
        target = f"< {t['latency_ms_below']:g} / > {t['fps_above']:g} / < {t['memory_mb_below']:g}" if t else "—"
        lines.append(
            f"| {row['label']} | {row['backend']} | {row['precision']} | {row['latency_p50_ms']:.2f}{mark(row, 'latency')} "
            f"| {row['fps_batch1']:.1f}{mark(row, 'fps')} | {row['memory_mb']:.1f}{mark(row, 'memory')} "
            f"| {row['memory_steady_mb']:.1f} | {row['fps_batch8']:.1f} | {row['cold_start_ms']:.0f} | {target} |"
        )
    for skipped in document["skipped"]:
        lines.append(f"\nSkipped {skipped['variant']}: {skipped['reason']}")
    lines += ["", f"Method: {document['method']}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(m[0] for m in MODELS))
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="backend[:preset], comma-separated (e.g. openvino:int8 too)"
    )
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds per scenario")
    parser.add_argument("--min-queries", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--baseline", action="store_true", help="also measure the raw runtime, interleaved")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from edgecore import EngineConfig
    from edgecore.bench import BenchSettings, run_benchmark
    from _common import machine as machine_info  # waits for a quiet machine; ["load"] is live (_common.py)

    started = time.perf_counter()
    wanted = [m for m in MODELS if m[0] in args.models.split(",")]
    backends = _available_backends()
    settings = BenchSettings(
        duration_s=args.duration, min_queries=args.min_queries, warmup=5, cold_runs=1, baseline=args.baseline
    )
    document: dict[str, Any] = {
        "schema": "edgecore.model_comparison/1",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": settings.to_json(),
        "method": "edgecore bench scenarios single-stream (batch 1), offline (batch 8) and cold-start (1 fresh process, "
        "whose peak RSS growth over an import-only process is the memory figure); int8 rows measure the model "
        "optimized once by Engine.optimize and saved, as deployed; rows are taken one after another in one process",
        "rows": [],
        "skipped": [],
    }
    with tempfile.TemporaryDirectory(prefix="edgecore-models-") as folder:
        for variant in args.variants.split(","):
            backend, _, preset = variant.partition(":")
            preset = preset or None
            if backend not in backends or backends[backend]:
                document["skipped"].append({"variant": variant, "reason": backends.get(backend) or "not installed"})
                continue
            for model, label, targets in wanted:
                print(f"{label} on {variant} ...", file=sys.stderr, flush=True)
                try:
                    source, optimization = _artifact(model, backend, preset, Path(folder))
                    report = run_benchmark(
                        source,
                        ["single-stream", "offline", "cold-start"],
                        settings=settings,
                        config=EngineConfig(backend=backend, num_threads=args.threads),
                    )
                except Exception as exc:  # one variant failing must not lose the others
                    document["skipped"].append({"variant": f"{model} on {variant}", "reason": repr(exc)[:300]})
                    continue
                row = _row(model, label, targets, backend, preset, report, optimization)
                document["rows"].append(row)
                print(
                    f"  p50 {row['latency_p50_ms']:.2f} ms, {row['fps_batch1']:.1f} FPS, "
                    f"{row['memory_mb']:.1f} MB, cold start {row['cold_start_ms']:.0f} ms",
                    file=sys.stderr,
                    flush=True,
                )
    document["wall_s"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "model_comparison.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / "model_comparison.md").write_text(_markdown(document))
    print(_markdown(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
